package storegateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"github.com/grafana/dskit/services"
	"github.com/grafana/dskit/user"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/tsdb/tsdbutil"
	"github.com/thanos-io/objstore"
	"github.com/thanos-io/objstore/providers/filesystem"
	"github.com/thanos-io/thanos/pkg/block/metadata"
	"github.com/thanos-io/thanos/pkg/info/infopb"
	"github.com/thanos-io/thanos/pkg/store/storepb"
	"google.golang.org/grpc"

	"github.com/vigil-obs/vigil/pkg/ingester/client"
	"github.com/vigil-obs/vigil/pkg/storeapi"
	"github.com/vigil-obs/vigil/pkg/storegateway/storegatewaytest"
	"github.com/vigil-obs/vigil/pkg/util/grpcutil"
)

type sample struct {
	t  int64
	f  float64
	h  *histogram.Histogram
	fh *histogram.FloatHistogram
}

// floatSeries returns n samples every 15s from start with values derived from seed.
func floatSeries(lset labels.Labels, start int64, n int, seed float64) storage.Series {
	samples := make([]chunks.Sample, 0, n)
	for i := range n {
		samples = append(samples, sample{t: start + int64(i)*15_000, f: seed + float64(i)*1.5})
	}
	return storage.NewListSeries(lset, samples)
}

func histSeries(lset labels.Labels, start int64, n int) storage.Series {
	samples := make([]chunks.Sample, 0, n)
	for i := range n {
		samples = append(samples, sample{t: start + int64(i)*15_000, h: tsdbutil.GenerateTestHistogram(int64(i))})
	}
	return storage.NewListSeries(lset, samples)
}

func (s sample) T() int64                      { return s.t }
func (s sample) ST() int64                     { return 0 }
func (s sample) F() float64                    { return s.f }
func (s sample) H() *histogram.Histogram       { return s.h }
func (s sample) FH() *histogram.FloatHistogram { return s.fh }
func (s sample) Copy() chunks.Sample           { return s }
func (s sample) Type() chunkenc.ValueType {
	switch {
	case s.h != nil:
		return chunkenc.ValHistogram
	case s.fh != nil:
		return chunkenc.ValFloatHistogram
	}
	return chunkenc.ValFloat
}

// renamedInfoClient calls the Info API under the store-gateway's service name.
type renamedInfoClient struct{ conn *grpc.ClientConn }

func (c renamedInfoClient) Info(ctx context.Context, in *infopb.InfoRequest, opts ...grpc.CallOption) (*infopb.InfoResponse, error) {
	out := new(infopb.InfoResponse)
	if err := c.conn.Invoke(ctx, "/"+InfoServiceName+"/Info", in, out, opts...); err != nil {
		return nil, err
	}
	return out, nil
}

type harness struct {
	t       *testing.T
	bkt     objstore.Bucket
	gw      *StoreGateway
	client  storepb.StoreClient
	info    infopb.InfoClient
	dataDir string
}

func newHarness(t *testing.T, cfgFn func(*Config)) *harness {
	t.Helper()
	bkt, err := filesystem.NewBucket(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, bkt: bkt, dataDir: t.TempDir()}
	cfg := Config{DataDir: h.dataDir, SyncInterval: time.Hour, ChunkCacheSize: 1 << 20}
	if cfgFn != nil {
		cfgFn(&cfg)
	}
	h.gw, err = New(cfg, bkt, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := services.StartAndAwaitRunning(context.Background(), h.gw); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := services.StopAndAwaitTerminated(context.Background(), h.gw); err != nil {
			t.Errorf("stop store-gateway: %v", err)
		}
	})
	addr := storegatewaytest.StartGRPC(t, func(s *grpc.Server) { h.gw.RegisterGRPC(s) })
	conn, err := grpc.NewClient(addr, client.DialOptions(client.DefaultConfig())...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	h.client = grpcutil.NewStoreClient(conn, StoreServiceName)
	h.info = renamedInfoClient{conn: conn}
	return h
}

func (h *harness) writeBlock(tenant string, opts storegatewaytest.BlockOptions, series ...storage.Series) ulid.ULID {
	h.t.Helper()
	id, err := storegatewaytest.WriteBlock(context.Background(), h.bkt, h.t.TempDir(), tenant, series, opts)
	if err != nil {
		h.t.Fatal(err)
	}
	return id
}

func (h *harness) sync() {
	h.t.Helper()
	if err := h.gw.SyncNow(context.Background()); err != nil {
		h.t.Fatalf("sync: %v", err)
	}
}

func tenantCtx(tenant string) context.Context {
	return user.InjectOrgID(context.Background(), tenant)
}

// series runs a Series call and decodes every sample, keyed by the series' label string.
func (h *harness) series(tenant string, req *storepb.SeriesRequest) (order []string, out map[string][]sample) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(tenantCtx(tenant), time.Minute)
	defer cancel()
	stream, err := h.client.Series(ctx, req)
	if err != nil {
		h.t.Fatal(err)
	}
	out = map[string][]sample{}
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			h.t.Fatalf("series: %v", err)
		}
		s := resp.GetSeries()
		if s == nil {
			h.t.Fatalf("unexpected response %v", resp)
		}
		key := client.PromLabelsFromZLabels(s.Labels).String()
		order = append(order, key)
		out[key] = nil
		for _, c := range s.Chunks {
			enc, err := storeapi.EncodingFromPB(c.Raw.Type)
			if err != nil {
				h.t.Fatal(err)
			}
			chk, err := chunkenc.FromData(enc, c.Raw.Data)
			if err != nil {
				h.t.Fatal(err)
			}
			it := chk.Iterator(nil)
			for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
				switch vt {
				case chunkenc.ValFloat:
					ts, f := it.At()
					out[key] = append(out[key], sample{t: ts, f: f})
				case chunkenc.ValHistogram:
					ts, hh := it.AtHistogram(nil)
					out[key] = append(out[key], sample{t: ts, h: hh})
				default:
					h.t.Fatalf("unexpected value type %s", vt)
				}
			}
			if it.Err() != nil {
				h.t.Fatal(it.Err())
			}
		}
	}
	return order, out
}

func matchers(t *testing.T, ms ...*labels.Matcher) []storepb.LabelMatcher {
	t.Helper()
	out, err := storepb.PromMatchersToMatchers(ms...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func expectSamples(t *testing.T, s storage.Series) []sample {
	t.Helper()
	var out []sample
	it := s.Iterator(nil)
	for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
		switch vt {
		case chunkenc.ValFloat:
			ts, f := it.At()
			out = append(out, sample{t: ts, f: f})
		case chunkenc.ValHistogram:
			ts, h := it.AtHistogram(nil)
			out = append(out, sample{t: ts, h: h})
		}
	}
	return out
}

func equalSamples(a, b []sample) error {
	if len(a) != len(b) {
		return fmt.Errorf("got %d samples, want %d", len(a), len(b))
	}
	for i := range a {
		if a[i].t != b[i].t || a[i].f != b[i].f {
			return fmt.Errorf("sample %d: got (%d,%g), want (%d,%g)", i, a[i].t, a[i].f, b[i].t, b[i].f)
		}
		if (a[i].h == nil) != (b[i].h == nil) || (a[i].h != nil && !a[i].h.Equals(b[i].h)) {
			return fmt.Errorf("sample %d: histogram got %v, want %v", i, a[i].h, b[i].h)
		}
	}
	return nil
}

func TestStoreGateway_ServesTenantBlocks(t *testing.T) {
	h := newHarness(t, nil)
	const hour = int64(time.Hour / time.Millisecond)
	up1 := floatSeries(labels.FromStrings("__name__", "up", "job", "a"), 0, 480, 1)          // 0h-2h
	up2 := floatSeries(labels.FromStrings("__name__", "up", "job", "a"), 2*hour, 480, 10000) // 2h-4h
	other := floatSeries(labels.FromStrings("__name__", "up", "job", "b"), 0, 100, 5)
	hist := histSeries(labels.FromStrings("__name__", "lat", "job", "a"), 0, 300)
	h.writeBlock("team-a", storegatewaytest.BlockOptions{}, up1, other, hist)
	h.writeBlock("team-a", storegatewaytest.BlockOptions{}, up2)
	h.writeBlock("team-b", storegatewaytest.BlockOptions{}, floatSeries(labels.FromStrings("__name__", "secret", "job", "b"), 0, 10, 1))
	// Blocks that must be ignored: incomplete upload, downsampled, marked for deletion.
	h.writeBlock("team-a", storegatewaytest.BlockOptions{SkipMeta: true}, floatSeries(labels.FromStrings("__name__", "incomplete"), 0, 10, 1))
	h.writeBlock("team-a", storegatewaytest.BlockOptions{DownsampleResolution: 300000}, floatSeries(labels.FromStrings("__name__", "downsampled"), 0, 10, 1))
	marked := h.writeBlock("team-a", storegatewaytest.BlockOptions{}, floatSeries(labels.FromStrings("__name__", "deleted"), 0, 10, 1))
	if err := h.bkt.Upload(context.Background(), path.Join("team-a", marked.String(), metadata.DeletionMarkFilename), strings.NewReader(`{}`)); err != nil {
		t.Fatal(err)
	}
	h.sync()

	order, got := h.series("team-a", &storepb.SeriesRequest{
		MinTime: 0, MaxTime: 10 * hour,
		Matchers: matchers(t, labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".+")),
	})
	wantOrder := []string{`{__name__="lat", job="a"}`, `{__name__="up", job="a"}`, `{__name__="up", job="b"}`}
	if strings.Join(order, " ") != strings.Join(wantOrder, " ") {
		t.Fatalf("series order = %v, want %v", order, wantOrder)
	}
	upWant := append(expectSamples(t, up1), expectSamples(t, up2)...)
	for key, want := range map[string][]sample{
		wantOrder[0]: expectSamples(t, hist),
		wantOrder[1]: upWant,
		wantOrder[2]: expectSamples(t, other),
	} {
		if err := equalSamples(got[key], want); err != nil {
			t.Errorf("%s: %v", key, err)
		}
	}

	// Tenant isolation: team-b sees only its own series, and no tenant sees nothing.
	order, _ = h.series("team-b", &storepb.SeriesRequest{MinTime: 0, MaxTime: 10 * hour, Matchers: matchers(t, labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".+"))})
	if len(order) != 1 || order[0] != `{__name__="secret", job="b"}` {
		t.Fatalf("team-b series = %v", order)
	}
	order, _ = h.series("team-c", &storepb.SeriesRequest{MinTime: 0, MaxTime: 10 * hour, Matchers: matchers(t, labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".+"))})
	if len(order) != 0 {
		t.Fatalf("unknown tenant got series %v", order)
	}

	// Time range selection: only the second block's samples of up{job="a"}.
	_, got = h.series("team-a", &storepb.SeriesRequest{MinTime: 2 * hour, MaxTime: 10 * hour, Matchers: matchers(t, labels.MustNewMatcher(labels.MatchEqual, "__name__", "up"))})
	if err := equalSamples(got[wantOrder[1]], expectSamples(t, up2)); err != nil {
		t.Errorf("range-limited: %v", err)
	}

	// SkipChunks returns labels only.
	ctx := tenantCtx("team-a")
	stream, err := h.client.Series(ctx, &storepb.SeriesRequest{MinTime: 0, MaxTime: 10 * hour, SkipChunks: true, Matchers: matchers(t, labels.MustNewMatcher(labels.MatchEqual, "job", "a"))})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetSeries().Chunks) != 0 {
			t.Errorf("SkipChunks returned chunks")
		}
		n++
	}
	if n != 2 {
		t.Errorf("SkipChunks returned %d series, want 2", n)
	}

	names, err := h.client.LabelNames(ctx, &storepb.LabelNamesRequest{Start: 0, End: 10 * hour})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(names.Names, ",") != "__name__,job" {
		t.Errorf("label names = %v", names.Names)
	}
	vals, err := h.client.LabelValues(ctx, &storepb.LabelValuesRequest{Label: "__name__", Start: 0, End: 10 * hour})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(vals.Values, ",") != "lat,up" {
		t.Errorf("label values = %v", vals.Values)
	}
	vals, err = h.client.LabelValues(ctx, &storepb.LabelValuesRequest{Label: "job", Start: 0, End: 10 * hour, Matchers: matchers(t, labels.MustNewMatcher(labels.MatchEqual, "__name__", "lat"))})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(vals.Values, ",") != "a" {
		t.Errorf("label values with matcher = %v", vals.Values)
	}

	info, err := h.info.Info(ctx, &infopb.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Store == nil || info.Store.MinTime != 0 || info.Store.MaxTime < 4*hour-15_000 {
		t.Errorf("info = %+v", info.Store)
	}

	// Only the served blocks' index files are held locally: 2 for team-a, 1 for team-b.
	var files []string
	_ = filepath.WalkDir(h.dataDir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(h.dataDir, p)
			files = append(files, rel)
		}
		return err
	})
	if len(files) != 3 {
		t.Errorf("local files = %v, want 3 index files", files)
	}
	for _, f := range files {
		if filepath.Base(f) != "index" {
			t.Errorf("unexpected local file %s", f)
		}
	}
}

func TestStoreGateway_DropsDeletedBlocksAndReadsLargeChunks(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.ChunkCacheSize = 0 })
	// A tiny read-ahead forces the second, exact range read for every chunk.
	h.gw.readAhead = 4
	s := histSeries(labels.FromStrings("__name__", "lat"), 0, 200)
	id := h.writeBlock("t", storegatewaytest.BlockOptions{}, s)
	h.sync()
	req := &storepb.SeriesRequest{MinTime: 0, MaxTime: 1 << 40, Matchers: matchers(t, labels.MustNewMatcher(labels.MatchEqual, "__name__", "lat"))}
	_, got := h.series("t", req)
	if err := equalSamples(got[`{__name__="lat"}`], expectSamples(t, s)); err != nil {
		t.Fatal(err)
	}
	local := filepath.Join(h.dataDir, "t", id.String(), "index")
	if _, err := os.Stat(local); err != nil {
		t.Fatalf("index not downloaded: %v", err)
	}

	if err := h.bkt.Delete(context.Background(), path.Join("t", id.String(), metadata.MetaFilename)); err != nil {
		t.Fatal(err)
	}
	err := h.bkt.Iter(context.Background(), path.Join("t", id.String()), func(name string) error {
		return h.bkt.Delete(context.Background(), name)
	}, objstore.WithRecursiveIter())
	if err != nil {
		t.Fatal(err)
	}
	h.sync()
	if order, _ := h.series("t", req); len(order) != 0 {
		t.Fatalf("deleted block still served: %v", order)
	}
	if _, err := os.Stat(filepath.Join(h.dataDir, "t")); !os.IsNotExist(err) {
		t.Fatalf("local files of deleted block remain: %v", err)
	}
}

// A block marked for deletion is served until its mark is older than
// -store-gateway.ignore-deletion-marks-delay, so a sync racing with the compactor (which
// uploads the replacement first, then marks) never serves neither. Both mark locations
// (the block's own and Mimir's global markers/) count.
func TestStoreGateway_ServesRecentlyMarkedBlocksForADelay(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.IgnoreDeletionMarksDelay = time.Hour })
	req := &storepb.SeriesRequest{MinTime: 0, MaxTime: 1 << 40, Matchers: matchers(t, labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".+"))}
	mark := func(name string, id ulid.ULID, at time.Time) {
		t.Helper()
		body, err := json.Marshal(metadata.DeletionMark{ID: id, Version: 1, DeletionTime: at.Unix()})
		if err != nil {
			t.Fatal(err)
		}
		if err := h.bkt.Upload(context.Background(), name, bytes.NewReader(body)); err != nil {
			t.Fatal(err)
		}
	}
	recent := h.writeBlock("t", storegatewaytest.BlockOptions{}, floatSeries(labels.FromStrings("__name__", "recent"), 0, 10, 1))
	old := h.writeBlock("t", storegatewaytest.BlockOptions{}, floatSeries(labels.FromStrings("__name__", "old"), 0, 10, 1))
	oldGlobal := h.writeBlock("t", storegatewaytest.BlockOptions{}, floatSeries(labels.FromStrings("__name__", "old_global"), 0, 10, 1))
	recentGlobal := h.writeBlock("t", storegatewaytest.BlockOptions{}, floatSeries(labels.FromStrings("__name__", "recent_global"), 0, 10, 1))
	mark(path.Join("t", recent.String(), metadata.DeletionMarkFilename), recent, time.Now())
	mark(path.Join("t", old.String(), metadata.DeletionMarkFilename), old, time.Now().Add(-2*time.Hour))
	mark(path.Join("t", "markers", oldGlobal.String()+"-"+metadata.DeletionMarkFilename), oldGlobal, time.Now().Add(-2*time.Hour))
	mark(path.Join("t", "markers", recentGlobal.String()+"-"+metadata.DeletionMarkFilename), recentGlobal, time.Now())
	h.sync()
	order, _ := h.series("t", req)
	if want := `{__name__="recent"} {__name__="recent_global"}`; strings.Join(order, " ") != want {
		t.Fatalf("served %v, want %s", order, want)
	}
}

// countingBucket counts ranged reads.
type countingBucket struct {
	objstore.Bucket
	getRanges atomic.Int64
}

func (b *countingBucket) GetRange(ctx context.Context, name string, off, length int64) (io.ReadCloser, error) {
	b.getRanges.Add(1)
	return b.Bucket.GetRange(ctx, name, off, length)
}

func TestStoreGateway_ReadAheadCachesNeighbouringChunks(t *testing.T) {
	fs, err := filesystem.NewBucket(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	bkt := &countingBucket{Bucket: fs}
	var series []storage.Series
	for i := range 50 {
		series = append(series, floatSeries(labels.FromStrings("__name__", "m", "i", fmt.Sprint(i)), 0, 480, float64(i)))
	}
	if _, err := storegatewaytest.WriteBlock(context.Background(), bkt, t.TempDir(), "t", series, storegatewaytest.BlockOptions{}); err != nil {
		t.Fatal(err)
	}
	gw, err := New(Config{DataDir: t.TempDir(), SyncInterval: time.Hour, ChunkCacheSize: 64 << 20}, bkt, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := services.StartAndAwaitRunning(context.Background(), gw); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = services.StopAndAwaitTerminated(context.Background(), gw) })
	q, err := gw.tenantQueryable(context.Background(), "t")
	if err != nil || q == nil {
		t.Fatalf("tenant queryable: %v", err)
	}
	read := func() int {
		cq, err := q.ChunkQuerier(0, 1<<40)
		if err != nil {
			t.Fatal(err)
		}
		defer cq.Close()
		set := storage.NewSeriesSetFromChunkSeriesSet(cq.Select(context.Background(), true, nil, labels.MustNewMatcher(labels.MatchEqual, "__name__", "m")))
		n := 0
		for set.Next() {
			want := series[n] // label order of "i" values differs from numeric order
			for _, s := range series {
				if labels.Equal(s.Labels(), set.At().Labels()) {
					want = s
				}
			}
			if err := equalSamples(expectSamples(t, set.At()), expectSamples(t, want)); err != nil {
				t.Fatalf("%s: %v", set.At().Labels(), err)
			}
			n++
		}
		if set.Err() != nil {
			t.Fatal(set.Err())
		}
		return n
	}
	if n := read(); n != 50 {
		t.Fatalf("read %d series, want 50", n)
	}
	// 50 series x 4 chunks: one request per chunk would be 200.
	if n := bkt.getRanges.Load(); n == 0 || n > 20 {
		t.Errorf("cold scan made %d range requests, want a handful", n)
	}
	before := bkt.getRanges.Load()
	read()
	if n := bkt.getRanges.Load() - before; n != 0 {
		t.Errorf("warm scan made %d range requests, want 0", n)
	}
}

func TestStoreGateway_SyncEndpoint(t *testing.T) {
	h := newHarness(t, nil)
	r := mux.NewRouter()
	h.gw.RegisterHTTP(r)
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)

	h.writeBlock("t", storegatewaytest.BlockOptions{}, floatSeries(labels.FromStrings("__name__", "m"), 0, 10, 1))
	req := &storepb.SeriesRequest{MinTime: 0, MaxTime: 1 << 40, Matchers: matchers(t, labels.MustNewMatcher(labels.MatchEqual, "__name__", "m"))}
	if order, _ := h.series("t", req); len(order) != 0 {
		t.Fatalf("block visible before sync: %v", order)
	}
	resp, err := http.Post(srv.URL+"/store-gateway/sync", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("sync status %d", resp.StatusCode)
	}
	if order, _ := h.series("t", req); len(order) != 1 {
		t.Fatalf("block not visible after sync: %v", order)
	}
}

func TestStoreGateway_RejectsRequestsWithoutTenant(t *testing.T) {
	h := newHarness(t, nil)
	_, err := h.client.LabelNames(context.Background(), &storepb.LabelNamesRequest{})
	if err == nil {
		t.Fatal("expected an error without tenant")
	}
}

func TestValidTenant(t *testing.T) {
	for tenant, want := range map[string]bool{
		"team-a": true, "": false, "..": false, "a/b": false, "a..b": false, "x\x01": false, strings.Repeat("a", 151): false,
	} {
		if got := validTenant(tenant); got != want {
			t.Errorf("validTenant(%q) = %v, want %v", tenant, got, want)
		}
	}
}

func TestStoreGateway_MergesOverlappingAndConcatenatesDisjointBlocks(t *testing.T) {
	h := newHarness(t, nil)
	lset := labels.FromStrings("__name__", "m")
	// Values depend only on the timestamp, so replicated samples are identical.
	part := func(from, n int) storage.Series { return floatSeries(lset, int64(from)*15_000, n, float64(from)*1.5) }
	h.writeBlock("t", storegatewaytest.BlockOptions{}, part(300, 10)) // disjoint, later
	h.writeBlock("t", storegatewaytest.BlockOptions{}, part(0, 100))
	h.writeBlock("t", storegatewaytest.BlockOptions{}, part(50, 100)) // overlaps the previous one
	h.sync()
	req := &storepb.SeriesRequest{MinTime: 0, MaxTime: 1 << 40, Matchers: matchers(t, labels.MustNewMatcher(labels.MatchEqual, "__name__", "m"))}
	_, got := h.series("t", req)
	want := append(expectSamples(t, part(0, 150)), expectSamples(t, part(300, 10))...)
	if err := equalSamples(got[lset.String()], want); err != nil {
		t.Fatal(err)
	}

	h2 := newHarness(t, nil)
	h2.writeBlock("t", storegatewaytest.BlockOptions{}, part(200, 50))
	h2.writeBlock("t", storegatewaytest.BlockOptions{}, part(0, 100))
	h2.writeBlock("t", storegatewaytest.BlockOptions{}, part(100, 100))
	h2.sync()
	_, got = h2.series("t", req)
	if err := equalSamples(got[lset.String()], expectSamples(t, part(0, 250))); err != nil {
		t.Fatalf("disjoint blocks: %v", err)
	}
}

func TestStoreGateway_IndexCacheBoundsLocalDisk(t *testing.T) {
	lset := labels.FromStrings("__name__", "m")
	part := func(from, n int) storage.Series { return floatSeries(lset, int64(from)*15_000, n, float64(from)*1.5) }
	var budget int64
	h := newHarness(t, func(c *Config) { c.IndexCacheSize = 1 }) // the real budget is set below, before the first sync
	var ids []ulid.ULID
	for i := range 3 {
		id := h.writeBlock("t", storegatewaytest.BlockOptions{}, part(i*1000, 100))
		ids = append(ids, id)
		attrs, err := h.bkt.Attributes(context.Background(), path.Join("t", id.String(), "index"))
		if err != nil {
			t.Fatal(err)
		}
		budget = max(budget, attrs.Size*3/2) // room for one index, not two
	}
	h.gw.indexes.mtx.Lock()
	h.gw.indexes.maxBytes = budget
	h.gw.indexes.mtx.Unlock()
	localIndexes := func() []string {
		t.Helper()
		var out []string
		for _, id := range ids {
			if _, err := os.Stat(filepath.Join(h.dataDir, "t", id.String(), "index")); err == nil {
				out = append(out, id.String())
			}
		}
		return out
	}
	h.sync()
	if got := localIndexes(); len(got) != 1 || got[0] != ids[2].String() {
		t.Fatalf("after sync local indexes = %v, want only the last loaded %s", got, ids[2])
	}
	if n := testutil.ToFloat64(h.gw.indexDownloads); n != 3 {
		t.Fatalf("%v downloads after sync, want 3", n)
	}

	// Querying the first block's time range downloads its index again, which then
	// replaces the other one.
	query := func(from, n int) {
		t.Helper()
		req := &storepb.SeriesRequest{MinTime: int64(from) * 15_000, MaxTime: int64(from+n-1) * 15_000,
			Matchers: matchers(t, labels.MustNewMatcher(labels.MatchEqual, "__name__", "m"))}
		_, got := h.series("t", req)
		if err := equalSamples(got[lset.String()], expectSamples(t, part(from, n))); err != nil {
			t.Fatal(err)
		}
	}
	query(0, 100)
	if got := localIndexes(); len(got) != 1 || got[0] != ids[0].String() {
		t.Fatalf("after query local indexes = %v, want only %s", got, ids[0])
	}
	if n := testutil.ToFloat64(h.gw.indexDownloads); n != 4 {
		t.Fatalf("%v downloads, want 4", n)
	}
	query(0, 100) // still local: no download
	if n := testutil.ToFloat64(h.gw.indexDownloads); n != 4 {
		t.Fatalf("%v downloads after a repeated query, want 4", n)
	}

	// A query over all blocks holds every index while it runs and shrinks back after.
	req := &storepb.SeriesRequest{MinTime: 0, MaxTime: 1 << 40, Matchers: matchers(t, labels.MustNewMatcher(labels.MatchEqual, "__name__", "m"))}
	_, got := h.series("t", req)
	want := append(append(expectSamples(t, part(0, 100)), expectSamples(t, part(1000, 100))...), expectSamples(t, part(2000, 100))...)
	if err := equalSamples(got[lset.String()], want); err != nil {
		t.Fatal(err)
	}
	if got := localIndexes(); len(got) > 1 {
		t.Fatalf("after a query over all blocks local indexes = %v, want at most one", got)
	}
	if b := testutil.ToFloat64(h.gw.indexes.size); b > float64(budget) {
		t.Fatalf("index cache holds %v bytes, budget %d", b, budget)
	}
}
