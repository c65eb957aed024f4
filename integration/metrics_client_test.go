package integration

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/gogo/protobuf/proto"
	"github.com/golang/snappy"
	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	remoteapi "github.com/prometheus/client_golang/exp/api/remote"
	config_util "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
	"github.com/prometheus/prometheus/storage/remote"
)

// writeClient returns Prometheus' own remote-write client (the code a Prometheus server uses
// to ship samples) for the given protocol version and tenant ("" sends no tenant header).
func writeClient(t testing.TB, in *instance, path string, msg remoteapi.WriteMessageType, tenantID string) remote.WriteClient {
	t.Helper()
	u, err := url.Parse(in.URL(path))
	if err != nil {
		t.Fatal(err)
	}
	headers := map[string]string{}
	if tenantID != "" {
		headers["X-Scope-OrgID"] = tenantID
	}
	c, err := remote.NewWriteClient(fmt.Sprintf("test-%s-%s", msg, tenantID), &remote.ClientConfig{
		URL:              &config_util.URL{URL: u},
		Timeout:          model.Duration(30 * time.Second),
		HTTPClientConfig: config_util.DefaultHTTPClientConfig,
		Headers:          headers,
		WriteProtoMsg:    msg,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// storeV1 encodes req as Prometheus does for remote write 1.0 and sends it.
func storeV1(ctx context.Context, c remote.WriteClient, req *prompb.WriteRequest) (remote.WriteResponseStats, error) {
	raw, err := proto.Marshal(req)
	if err != nil {
		return remote.WriteResponseStats{}, err
	}
	return c.Store(ctx, snappy.Encode(nil, raw), 0)
}

// storeV2 encodes series as a remote write 2.0 request and sends it.
func storeV2(ctx context.Context, c remote.WriteClient, series []seriesV2) (remote.WriteResponseStats, error) {
	st := writev2.NewSymbolTable()
	req := &writev2.Request{}
	for _, s := range series {
		ts := writev2.TimeSeries{LabelsRefs: st.SymbolizeLabels(s.lset, nil)}
		for _, smp := range s.samples {
			ts.Samples = append(ts.Samples, writev2.Sample{Timestamp: smp.Timestamp, Value: smp.Value})
		}
		ts.Metadata = writev2.Metadata{Type: s.typ, HelpRef: st.Symbolize(s.help)}
		req.Timeseries = append(req.Timeseries, ts)
	}
	req.Symbols = st.Symbols()
	return storeV2Request(ctx, c, req)
}

type seriesV2 struct {
	lset    labels.Labels
	samples []prompb.Sample
	typ     writev2.Metadata_MetricType
	help    string
}

// queryAPI returns a client_golang Prometheus API client for base (e.g. "/prometheus"),
// sending tenantID when non-empty.
func queryAPI(t testing.TB, in *instance, base, tenantID string) promv1.API {
	t.Helper()
	rt := http.DefaultTransport
	if tenantID != "" {
		rt = tenantRoundTripper{tenant: tenantID, next: rt}
	}
	c, err := promapi.NewClient(promapi.Config{Address: in.URL(base), RoundTripper: rt})
	if err != nil {
		t.Fatal(err)
	}
	return promv1.NewAPI(c)
}

type tenantRoundTripper struct {
	tenant string
	next   http.RoundTripper
}

func (rt tenantRoundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("X-Scope-OrgID", rt.tenant)
	return rt.next.RoundTrip(r)
}

// series builds a prompb series from alternating label names and values.
func series(kv ...string) []prompb.Label {
	var out []prompb.Label
	for i := 0; i < len(kv); i += 2 {
		out = append(out, prompb.Label{Name: kv[i], Value: kv[i+1]})
	}
	return out
}

// storeV2Request sends req, encoded as Prometheus' remote-write 2.0 client sends it.
func storeV2Request(ctx context.Context, c remote.WriteClient, req *writev2.Request) (remote.WriteResponseStats, error) {
	raw, err := proto.Marshal(req)
	if err != nil {
		return remote.WriteResponseStats{}, err
	}
	return c.Store(ctx, snappy.Encode(nil, raw), 0)
}
