package grpcutil

import (
	"context"
	"io"
	"net"
	"testing"

	"github.com/thanos-io/thanos/pkg/info/infopb"
	"github.com/thanos-io/thanos/pkg/store/labelpb"
	"github.com/thanos-io/thanos/pkg/store/storepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

type fakeStore struct {
	storepb.UnimplementedStoreServer
	name string
}

func (f fakeStore) Series(_ *storepb.SeriesRequest, srv storepb.Store_SeriesServer) error {
	for _, v := range []string{"a", "b"} {
		s := &storepb.Series{Labels: []labelpb.ZLabel{{Name: "store", Value: f.name}, {Name: "v", Value: v}}}
		if err := srv.Send(storepb.NewSeriesResponse(s)); err != nil {
			return err
		}
	}
	return nil
}

func (f fakeStore) LabelNames(context.Context, *storepb.LabelNamesRequest) (*storepb.LabelNamesResponse, error) {
	return &storepb.LabelNamesResponse{Names: []string{f.name}}, nil
}

func (f fakeStore) LabelValues(context.Context, *storepb.LabelValuesRequest) (*storepb.LabelValuesResponse, error) {
	return &storepb.LabelValuesResponse{Values: []string{f.name + "-value"}}, nil
}

func (f fakeStore) Info(context.Context, *infopb.InfoRequest) (*infopb.InfoResponse, error) {
	return &infopb.InfoResponse{ComponentType: f.name}, nil
}

// TestTwoStoreAPIsOnOneServer: the Thanos-named StoreAPI and a renamed one share a server;
// each client reaches its own.
func TestTwoStoreAPIsOnOneServer(t *testing.T) {
	srv := grpc.NewServer()
	RegisterStoreAPI(srv, ThanosStoreService, ThanosInfoService, fakeStore{name: "public"})
	RegisterStoreAPI(srv, "vigil.test.Store", "vigil.test.Info", fakeStore{name: "internal"})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := context.Background()

	for name, c := range map[string]storepb.StoreClient{
		"public":   storepb.NewStoreClient(conn), // Thanos' own generated client
		"internal": NewStoreClient(conn, "vigil.test.Store"),
	} {
		stream, err := c.Series(ctx, &storepb.SeriesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for {
			r, err := stream.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, r.GetSeries().Labels[0].Value+"/"+r.GetSeries().Labels[1].Value)
		}
		if len(got) != 2 || got[0] != name+"/a" || got[1] != name+"/b" {
			t.Fatalf("%s: series %v", name, got)
		}
		ln, err := c.LabelNames(ctx, &storepb.LabelNamesRequest{})
		if err != nil || len(ln.Names) != 1 || ln.Names[0] != name {
			t.Fatalf("%s: label names %v %v", name, ln, err)
		}
		lv, err := c.LabelValues(ctx, &storepb.LabelValuesRequest{Label: "x"})
		if err != nil || len(lv.Values) != 1 || lv.Values[0] != name+"-value" {
			t.Fatalf("%s: label values %v %v", name, lv, err)
		}
	}
	info, err := infopb.NewInfoClient(conn).Info(ctx, &infopb.InfoRequest{})
	if err != nil || info.ComponentType != "public" {
		t.Fatalf("public info: %v %v", info, err)
	}
	info, err = NewInfoClient(conn, "vigil.test.Info").Info(ctx, &infopb.InfoRequest{})
	if err != nil || info.ComponentType != "internal" {
		t.Fatalf("internal info: %v %v", info, err)
	}
}
