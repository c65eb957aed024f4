package ingester

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/prometheus/prompb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// readMetadataFile returns what MetadataFile of tenant holds right now, nil if it
// does not exist.
func readMetadataFile(t testing.TB, cfg Config, tenant string) map[string]savedMetadata {
	t.Helper()
	md, err := loadMetadataFile(cfg, tenant)
	if err != nil {
		t.Fatal(err)
	}
	return md
}

// loadMetadataFile is readMetadataFile for goroutines other than the test's.
func loadMetadataFile(cfg Config, tenant string) (map[string]savedMetadata, error) {
	b, err := os.ReadFile(filepath.Join(cfg.DataDir, "tsdb", tenant, MetadataFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out map[string]savedMetadata
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("decode %s: %w", MetadataFile, err)
	}
	return out, nil
}

func metadataPush(md ...prompb.MetricMetadata) *prompb.WriteRequest {
	return &prompb.WriteRequest{
		Timeseries: []prompb.TimeSeries{series([]string{"__name__", "up"}, prompb.Sample{Timestamp: time.Now().UnixMilli(), Value: 1})},
		Metadata:   md,
	}
}

// TestChangedMetadataIsOnDiskWhenPushReturns: the ingester acknowledges a metadata
// change only once it is in MetadataFile, and does not write the file for metadata
// it already saved.
func TestChangedMetadataIsOnDiskWhenPushReturns(t *testing.T) {
	cfg := testConfig(t)
	ing := startIngester(t, cfg, nil, nil)
	reqs := prompb.MetricMetadata{MetricFamilyName: "http_requests", Type: prompb.MetricMetadata_COUNTER, Help: "Requests.", Unit: "requests"}
	if _, err := ing.Push(ctxFor("t1"), metadataPush(reqs)); err != nil {
		t.Fatal(err)
	}
	if got := readMetadataFile(t, cfg, "t1"); got["http_requests"] != (savedMetadata{Type: "counter", Help: "Requests.", Unit: "requests"}) {
		t.Fatalf("%s after the push returned: %v", MetadataFile, got)
	}

	// Unchanged metadata: the file is not written again (so it stays deleted).
	path := filepath.Join(cfg.DataDir, "tsdb", "t1", MetadataFile)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if _, err := ing.Push(ctxFor("t1"), metadataPush(reqs)); err != nil {
		t.Fatal(err)
	}
	if got := readMetadataFile(t, cfg, "t1"); got != nil {
		t.Fatalf("push with unchanged metadata wrote %s: %v", MetadataFile, got)
	}

	// A changed HELP and a new family are saved, with everything known before.
	reqs.Help = "Requests served."
	errs := prompb.MetricMetadata{MetricFamilyName: "http_errors", Type: prompb.MetricMetadata_COUNTER, Help: "Errors."}
	if _, err := ing.Push(ctxFor("t1"), metadataPush(reqs, errs)); err != nil {
		t.Fatal(err)
	}
	got := readMetadataFile(t, cfg, "t1")
	if len(got) != 2 || got["http_requests"].Help != "Requests served." || got["http_errors"] != (savedMetadata{Type: "counter", Help: "Errors."}) {
		t.Fatalf("%s after a change: %v", MetadataFile, got)
	}
}

// TestMetadataSaveFailureIsNotAcknowledged: when the change cannot be saved the push
// fails (the sender retries), and the retry saves it even though the ingester already
// knows the metadata in memory.
func TestMetadataSaveFailureIsNotAcknowledged(t *testing.T) {
	cfg := testConfig(t)
	ing := startIngester(t, cfg, nil, nil)
	if _, err := ing.Push(ctxFor("t1"), metadataPush()); err != nil {
		t.Fatal(err)
	}
	// A directory where the temp file goes makes the save fail, also as root.
	blocker := filepath.Join(cfg.DataDir, "tsdb", "t1", MetadataFile+".tmp")
	if err := os.Mkdir(blocker, 0o750); err != nil {
		t.Fatal(err)
	}
	md := prompb.MetricMetadata{MetricFamilyName: "jobs", Type: prompb.MetricMetadata_GAUGE, Help: "Jobs."}
	for attempt := 0; attempt < 2; attempt++ {
		_, err := ing.Push(ctxFor("t1"), metadataPush(md))
		if status.Code(err) != codes.Internal {
			t.Fatalf("attempt %d: push whose metadata cannot be saved: %v, want Internal", attempt, err)
		}
	}
	if err := os.Remove(blocker); err != nil {
		t.Fatal(err)
	}
	resp, err := ing.Push(ctxFor("t1"), metadataPush(md))
	if err != nil {
		t.Fatal(err)
	}
	if resp.SamplesWritten != 1 || len(resp.Rejections) != 0 {
		t.Fatalf("retried push: %s", resp)
	}
	if got := readMetadataFile(t, cfg, "t1"); got["jobs"] != (savedMetadata{Type: "gauge", Help: "Jobs."}) {
		t.Fatalf("%s after the retry: %v", MetadataFile, got)
	}
}

// TestConcurrentMetadataPushes: of pushes arriving together, each one that returns
// has its metadata on disk, including a family another push changed first and may
// still be saving (that push's save covers both, or the waiting push saves it).
func TestConcurrentMetadataPushes(t *testing.T) {
	cfg := testConfig(t)
	ing := startIngester(t, cfg, nil, nil)
	const senders, pushes = 8, 15
	shared := prompb.MetricMetadata{MetricFamilyName: "shared", Type: prompb.MetricMetadata_GAUGE, Help: "Sent by everyone."}
	var wg sync.WaitGroup
	for s := 0; s < senders; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := 0; p < pushes; p++ {
				name := fmt.Sprintf("family_%d_%d", s, p)
				own := prompb.MetricMetadata{MetricFamilyName: name, Type: prompb.MetricMetadata_COUNTER, Help: "Own."}
				if _, err := ing.Push(ctxFor("t1"), metadataPush(shared, own)); err != nil {
					t.Error(err)
					return
				}
				got, err := loadMetadataFile(cfg, "t1")
				if err != nil {
					t.Error(err)
					return
				}
				if _, ok := got[name]; !ok {
					t.Errorf("push of %s returned before %s held it", name, MetadataFile)
					return
				}
				if got["shared"].Help != shared.Help {
					t.Errorf("push of %s returned before %s held family shared: %v", name, MetadataFile, got["shared"])
					return
				}
			}
		}()
	}
	wg.Wait()
	if got := readMetadataFile(t, cfg, "t1"); len(got) != senders*pushes+1 {
		t.Fatalf("%s holds %d families, want %d", MetadataFile, len(got), senders*pushes+1)
	}
}

// TestMetadataGroupCommit holds one push inside its metadata save and checks that a
// push carrying the same, not yet saved, metadata waits for that save, and that pushes
// with new metadata queued meanwhile share one save.
func TestMetadataGroupCommit(t *testing.T) {
	cfg := testConfig(t)
	cfg.CompactionInterval = time.Hour // no periodic save during the test
	ing := startIngester(t, cfg, nil, nil)
	if _, err := ing.Push(ctxFor("t1"), metadataPush()); err != nil {
		t.Fatal(err)
	}
	u := ing.getTSDB("t1")
	var (
		writes   atomic.Int32
		released atomic.Bool
		waiting  = make(chan struct{}, 16)
		writing  = make(chan struct{}, 1)
		release  = make(chan struct{})
	)
	// On failure, let the held push go before the ingester stops (it would wait for it).
	t.Cleanup(func() {
		if !released.Swap(true) {
			close(release)
		}
	})
	u.metaTestHooks.beforeWait = func() { waiting <- struct{}{} }
	u.metaTestHooks.beforeWrite = func() {
		if writes.Add(1) == 1 {
			writing <- struct{}{}
			<-release
		}
	}
	type result struct {
		name         string
		err          error
		afterRelease bool
	}
	results := make(chan result, 4)
	push := func(name string, md ...prompb.MetricMetadata) {
		go func() {
			_, err := ing.Push(ctxFor("t1"), metadataPush(md...))
			results <- result{name: name, err: err, afterRelease: released.Load()}
		}()
	}
	await := func(ch <-chan struct{}, what string) {
		t.Helper()
		select {
		case <-ch:
		case r := <-results:
			t.Fatalf("push %q returned (err %v) while waiting for %s", r.name, r.err, what)
		case <-time.After(time.Minute): // deadline against a hang, not a timing assertion
			t.Fatalf("timed out waiting for %s", what)
		}
	}
	shared := prompb.MetricMetadata{MetricFamilyName: "shared", Type: prompb.MetricMetadata_GAUGE, Help: "Shared."}
	push("first", shared)
	await(waiting, "the first push to reach the save")
	await(writing, "the first push to write")
	// The first push now holds the save. This one sends the same metadata, which is in
	// memory but not on disk yet: it must queue for the save, not return.
	push("same", shared)
	push("new1", prompb.MetricMetadata{MetricFamilyName: "new1", Type: prompb.MetricMetadata_COUNTER})
	push("new2", prompb.MetricMetadata{MetricFamilyName: "new2", Type: prompb.MetricMetadata_COUNTER})
	for range 3 {
		await(waiting, "the other pushes to queue for the save")
	}
	released.Store(true)
	close(release)
	for range 4 {
		var r result
		select {
		case r = <-results:
		case <-time.After(time.Minute):
			t.Fatal("timed out waiting for the pushes to return")
		}
		if r.err != nil {
			t.Fatalf("push %q: %v", r.name, r.err)
		}
		if !r.afterRelease {
			t.Fatalf("push %q returned before the save it waited for", r.name)
		}
	}
	// The held save wrote shared; the next covered new1 and new2 (both changed before
	// either got the lock); "same" and the other queued push found their version saved.
	if n := writes.Load(); n != 2 {
		t.Fatalf("%d metadata file writes for 4 pushes, want 2", n)
	}
	if got := readMetadataFile(t, cfg, "t1"); len(got) != 3 {
		t.Fatalf("%s after the pushes: %v", MetadataFile, got)
	}
}
