package client

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"

	"github.com/grafana/dskit/middleware"
	"github.com/grafana/dskit/user"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"github.com/thanos-io/thanos/pkg/exemplars/exemplarspb"
	"github.com/thanos-io/thanos/pkg/info/infopb"
	"github.com/thanos-io/thanos/pkg/metadata/metadatapb"
	"github.com/thanos-io/thanos/pkg/store/labelpb"
	"github.com/thanos-io/thanos/pkg/store/storepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	"google.golang.org/grpc/health/grpc_health_v1"
)

// fakeIngester echoes the tenant from the context into every response so the test
// proves the user-header interceptors carried it.
type fakeIngester struct {
	gotReq *prompb.WriteRequest
}

func (f *fakeIngester) Push(ctx context.Context, req *prompb.WriteRequest) (*PushResponse, error) {
	tenant, err := user.ExtractOrgID(ctx)
	if err != nil {
		return nil, err
	}
	f.gotReq = req
	return &PushResponse{
		SamplesWritten: int64(len(req.Timeseries[0].Samples)),
		Rejections:     []Rejection{{Reason: ReasonOutOfOrder, Series: tenant, Message: "m", Count: 3}},
	}, nil
}

func (f *fakeIngester) Series(req *storepb.SeriesRequest, srv storepb.Store_SeriesServer) error {
	tenant, err := user.ExtractOrgID(srv.Context())
	if err != nil {
		return err
	}
	s := &storepb.Series{
		Labels: ZLabelsFromPromLabels(labels.FromStrings("__name__", "up", "tenant", tenant)),
		Chunks: []storepb.AggrChunk{{MinTime: req.MinTime, MaxTime: req.MaxTime, Raw: &storepb.Chunk{Type: storepb.Chunk_XOR, Data: []byte{1, 2, 3}}}},
	}
	if err := srv.Send(storepb.NewSeriesResponse(s)); err != nil {
		return err
	}
	return srv.Send(storepb.NewWarnSeriesResponse(errors.New("warn")))
}

func (f *fakeIngester) LabelNames(ctx context.Context, _ *storepb.LabelNamesRequest) (*storepb.LabelNamesResponse, error) {
	tenant, err := user.ExtractOrgID(ctx)
	if err != nil {
		return nil, err
	}
	return &storepb.LabelNamesResponse{Names: []string{"__name__", tenant}}, nil
}

func (f *fakeIngester) LabelValues(ctx context.Context, req *storepb.LabelValuesRequest) (*storepb.LabelValuesResponse, error) {
	return &storepb.LabelValuesResponse{Values: []string{req.Label + "-v"}}, nil
}

func (f *fakeIngester) Exemplars(req *exemplarspb.ExemplarsRequest, srv exemplarspb.Exemplars_ExemplarsServer) error {
	return srv.Send(exemplarspb.NewExemplarsResponse(&exemplarspb.ExemplarData{
		SeriesLabels: labelpb.ZLabelSet{Labels: ZLabelsFromPromLabels(labels.FromStrings("__name__", req.Query))},
		Exemplars: []*exemplarspb.Exemplar{{
			Labels: labelpb.ZLabelSet{Labels: ZLabelsFromPromLabels(labels.FromStrings("trace_id", "abc"))},
			Value:  1.5, Ts: req.Start,
		}},
	}))
}

func (f *fakeIngester) MetricMetadata(req *metadatapb.MetricMetadataRequest, srv metadatapb.Metadata_MetricMetadataServer) error {
	return srv.Send(metadatapb.NewMetricMetadataResponse(metadatapb.FromMetadataMap(map[string][]metadatapb.Meta{
		req.Metric: {{Type: "counter", Help: "h", Unit: "seconds"}},
	})))
}

func (f *fakeIngester) Info(context.Context, *infopb.InfoRequest) (*infopb.InfoResponse, error) {
	return &infopb.InfoResponse{ComponentType: "receive", Store: &infopb.StoreInfo{MinTime: 1, MaxTime: 2}}, nil
}

func startServer(t *testing.T, opts ...grpc.ServerOption) (string, *fakeIngester) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts = append(opts,
		grpc.ChainUnaryInterceptor(middleware.ServerUserHeaderInterceptor),
		grpc.ChainStreamInterceptor(middleware.StreamServerUserHeaderInterceptor),
	)
	srv := grpc.NewServer(opts...)
	f := &fakeIngester{}
	RegisterIngesterServer(srv, f)
	storepb.RegisterStoreServer(srv, f)
	exemplarspb.RegisterExemplarsServer(srv, f)
	metadatapb.RegisterMetadataServer(srv, f)
	infopb.RegisterInfoServer(srv, f)
	grpc_health_v1.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String(), f
}

func TestClientRoundTrip(t *testing.T) {
	for name, opts := range map[string][]grpc.ServerOption{
		"server with codec":    ServerOptions(),
		"server default codec": nil,
	} {
		t.Run(name, func(t *testing.T) {
			addr, fake := startServer(t, opts...)
			c, err := New(addr, DefaultConfig())
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := c.Close(); err != nil {
					t.Error(err)
				}
			}()
			ctx := user.InjectOrgID(context.Background(), "team-a")

			req := &prompb.WriteRequest{
				Timeseries: []prompb.TimeSeries{{
					Labels:  []prompb.Label{{Name: "__name__", Value: "up"}},
					Samples: []prompb.Sample{{Timestamp: 1, Value: 1}, {Timestamp: 2, Value: 2}},
					Histograms: []prompb.Histogram{{
						Count: &prompb.Histogram_CountInt{CountInt: 3}, Sum: 1.5, Schema: 1,
						PositiveSpans: []prompb.BucketSpan{{Offset: 0, Length: 1}}, PositiveDeltas: []int64{3}, Timestamp: 3,
					}},
					Exemplars: []prompb.Exemplar{{Labels: []prompb.Label{{Name: "trace_id", Value: "t"}}, Value: 1, Timestamp: 1}},
				}},
				Metadata: []prompb.MetricMetadata{{MetricFamilyName: "up", Type: prompb.MetricMetadata_GAUGE, Help: "h"}},
			}
			resp, err := c.Push(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			if resp.SamplesWritten != 2 || len(resp.Rejections) != 1 || resp.Rejections[0].Series != "team-a" || resp.Rejections[0].Count != 3 {
				t.Fatalf("unexpected push response %s", resp)
			}
			if got := fake.gotReq; got == nil || len(got.Timeseries[0].Histograms) != 1 || got.Timeseries[0].Histograms[0].GetCountInt() != 3 ||
				len(got.Timeseries[0].Exemplars) != 1 || got.Metadata[0].Help != "h" {
				t.Fatalf("server received %v", got)
			}

			stream, err := c.Series(ctx, &storepb.SeriesRequest{MinTime: 10, MaxTime: 20})
			if err != nil {
				t.Fatal(err)
			}
			var series []*storepb.Series
			var warnings []string
			for {
				r, err := stream.Recv()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if s := r.GetSeries(); s != nil {
					series = append(series, s)
				}
				if w := r.GetWarning(); w != "" {
					warnings = append(warnings, w)
				}
			}
			if len(series) != 1 || len(warnings) != 1 {
				t.Fatalf("got %d series, warnings %v", len(series), warnings)
			}
			lset := PromLabelsFromZLabels(series[0].Labels)
			if lset.Get("tenant") != "team-a" || series[0].Chunks[0].MinTime != 10 || string(series[0].Chunks[0].Raw.Data) != "\x01\x02\x03" {
				t.Fatalf("unexpected series %v", series[0])
			}

			names, err := c.LabelNames(ctx, &storepb.LabelNamesRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if len(names.Names) != 2 || names.Names[1] != "team-a" {
				t.Fatalf("label names %v", names.Names)
			}
			values, err := c.LabelValues(ctx, &storepb.LabelValuesRequest{Label: "job"})
			if err != nil {
				t.Fatal(err)
			}
			if len(values.Values) != 1 || values.Values[0] != "job-v" {
				t.Fatalf("label values %v", values.Values)
			}

			ex, err := c.Exemplars(ctx, &exemplarspb.ExemplarsRequest{Query: "up", Start: 42})
			if err != nil {
				t.Fatal(err)
			}
			exResp, err := ex.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if d := exResp.GetData(); d == nil || d.Exemplars[0].Ts != 42 || d.Exemplars[0].Value != 1.5 || PromLabelsFromZLabels(d.SeriesLabels.Labels).Get("__name__") != "up" {
				t.Fatalf("exemplars %v", exResp)
			}

			md, err := c.MetricMetadata(ctx, &metadatapb.MetricMetadataRequest{Metric: "up"})
			if err != nil {
				t.Fatal(err)
			}
			mdResp, err := md.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if m := mdResp.GetMetadata(); m == nil || m.Metadata["up"].Metas[0].Unit != "seconds" {
				t.Fatalf("metadata %v", mdResp)
			}

			info, err := c.Info(ctx, &infopb.InfoRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if info.ComponentType != "receive" || info.Store.MaxTime != 2 {
				t.Fatalf("info %v", info)
			}

			h, err := c.Check(ctx, &grpc_health_v1.HealthCheckRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if h.Status != grpc_health_v1.HealthCheckResponse_SERVING {
				t.Fatalf("health %v", h.Status)
			}
		})
	}
}

func TestPushResponseRoundTrip(t *testing.T) {
	in := &PushResponse{
		SamplesWritten: 1 << 40, HistogramsWritten: 7, ExemplarsWritten: 0, MetadataWritten: 2,
		Rejections: []Rejection{
			{Reason: ReasonTooOld, Series: `{__name__="a"}`, Message: "too old", Count: 5},
			{Reason: ReasonPerUserSeriesLimit, Count: 1},
		},
	}
	b, err := in.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	// An unknown field from a newer ingester must be skipped.
	b = append(b, 0x50, 0x01) // field 10, varint 1
	var out PushResponse
	if err := out.Unmarshal(b); err != nil {
		t.Fatal(err)
	}
	if out.String() != in.String() {
		t.Fatalf("round trip mismatch:\n got %s\nwant %s", out.String(), in.String())
	}
	if out.RejectedCount() != 6 {
		t.Fatalf("rejected count %d", out.RejectedCount())
	}
	if err := out.Unmarshal([]byte{0x22, 0x05, 0x0a}); err == nil {
		t.Fatal("expected error on truncated rejection")
	}
}

func TestCodecFallbackToGoogleProtobuf(t *testing.T) {
	in := &grpc_health_v1.HealthCheckRequest{Service: "x"}
	data, err := Codec{}.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out grpc_health_v1.HealthCheckRequest
	if err := (Codec{}).Unmarshal(data, &out); err != nil {
		t.Fatal(err)
	}
	if out.Service != "x" {
		t.Fatalf("got %q", out.Service)
	}
	if _, err := (Codec{}).Marshal(struct{}{}); err == nil {
		t.Fatal("expected error for non-proto value")
	}
}

func TestPoolFactory(t *testing.T) {
	addr, _ := startServer(t, ServerOptions()...)
	pc, err := NewPoolFactory(DefaultConfig()).FromInstance(ringDesc(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if _, ok := pc.(IngesterClient); !ok {
		t.Fatalf("pool client %T is not an IngesterClient", pc)
	}
	// dskit's pool health check injects a dummy org ID the same way.
	if _, err := pc.Check(user.InjectOrgID(context.Background(), "0"), &grpc_health_v1.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
}
