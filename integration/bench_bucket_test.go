package integration

import (
	"io/fs"
	"math/rand"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gogo/protobuf/proto"
	"github.com/golang/snappy"
	remoteapi "github.com/prometheus/client_golang/exp/api/remote"
	"github.com/prometheus/prometheus/prompb"
)

// BenchmarkBucketBytesPerSample: bytes per sample of the blocks Vigil ships to the bucket,
// next to the block Prometheus' own TSDB cuts from the same samples, for two hours of 15s
// scrapes. VIGIL_BENCH_SERIES sets the series
// count (default 10k → 4.8M samples). Prometheus documents 1–2 bytes per sample, 1.37
// typical; the target is ≤ 1.5.
func BenchmarkBucketBytesPerSample(b *testing.B) {
	nSeries := envInt("VIGIL_BENCH_SERIES", 10_000)
	// Two value profiles. "scrape-mix" resembles what a Prometheus scrape carries: a third of
	// the series barely change (up, *_info, limits, config), counters grow by small counts,
	// integer gauges move now and then. "random-walk" changes every value every scrape: a
	// worst case for XOR compression.
	profiles := map[string]func(rnd *rand.Rand, s int, v float64) float64{
		"scrape-mix": func(rnd *rand.Rand, s int, v float64) float64 {
			switch s % 3 {
			case 0:
				if rnd.Intn(100) == 0 {
					return v + 1
				}
				return v
			case 1:
				return v + float64(rnd.Intn(4))
			default:
				if rnd.Intn(10) == 0 {
					return v + float64(rnd.Intn(200)-100)
				}
				return v
			}
		},
		"random-walk": func(rnd *rand.Rand, s int, v float64) float64 {
			if s%2 == 0 {
				return v + float64(rnd.Intn(100))
			}
			return v + float64(rnd.Intn(4096)-2048)
		},
	}
	// Prometheus snaps scrape timestamps to the interval when they are within 2ms of it
	// (since 2.32), so scrape-mix timestamps are exact; random-walk keeps up to 4ms of jitter.
	jitterMs := map[string]int{"scrape-mix": 0, "random-walk": 5}
	for _, name := range []string{"scrape-mix", "random-walk"} {
		next, jitter := profiles[name], jitterMs[name]
		b.Run("values="+name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				benchBucketSize(b, nSeries, jitter, next)
			}
		})
	}
}

func benchBucketSize(b *testing.B, nSeries, jitterMs int, next func(rnd *rand.Rand, s int, v float64) float64) {
	const rounds = 480 // 2h of 15s scrapes
	dataDir := b.TempDir()
	in := startVigil(b, dataDir, benchLimitFlags...)
	c := writeClient(b, in, "/api/v1/push", remoteapi.WriteV1MessageType, "")
	start := time.Now().Add(-3 * time.Hour).Truncate(2 * time.Hour)
	rnd := rand.New(rand.NewSource(1))
	values := make([]float64, nSeries)
	lsets := make([][]prompb.Label, nSeries)
	for s := range lsets {
		lsets[s] = realisticLabels(s, nSeries)
		values[s] = float64(rnd.Intn(1 << 20))
	}
	w := &ingestWorkload{series: nSeries, rounds: rounds}
	for r := 0; r < rounds; r++ {
		var reqs [][]byte
		for lo := 0; lo < nSeries; lo += 2000 {
			req := &prompb.WriteRequest{}
			for s := lo; s < min(lo+2000, nSeries); s++ {
				values[s] = next(rnd, s, values[s])
				ts := start.Add(time.Duration(r) * 15 * time.Second).UnixMilli()
				if jitterMs > 0 {
					ts += int64(rnd.Intn(jitterMs))
				}
				req.Timeseries = append(req.Timeseries, prompb.TimeSeries{Labels: lsets[s], Samples: []prompb.Sample{{Timestamp: ts, Value: values[s]}}})
			}
			raw, err := proto.Marshal(req)
			if err != nil {
				b.Fatal(err)
			}
			reqs = append(reqs, snappy.Encode(nil, raw))
		}
		w.requests = append(w.requests, reqs)
	}
	w.send(b, c, 4)
	post(b, in.URL("/ingester/flush"))
	vigil := dirSize(b, filepath.Join(dataDir, "bucket", "anonymous"), func(string) bool { return true })

	prom := startPromReceiver(b)
	w.send(b, prom.client, 4)
	post(b, prom.baseURL+"/compact")
	// Only block directories (ULIDs), not the WAL or the head's chunks.
	reference := dirSize(b, prom.dataDir, func(rel string) bool { return len(strings.Split(rel, "/")[0]) == 26 })

	samples := float64(nSeries * rounds)
	b.ReportMetric(float64(vigil)/samples, "vigil-bucket-B/sample")
	b.ReportMetric(float64(reference)/samples, "prom-block-B/sample")
	b.ReportMetric(float64(vigil)/float64(reference), "size-ratio")
	b.Logf("%d series x %d samples: vigil bucket %d bytes (%.3f B/sample), prometheus block %d bytes (%.3f B/sample), ratio %.3f",
		nSeries, rounds, vigil, float64(vigil)/samples, reference, float64(reference)/samples, float64(vigil)/float64(reference))
}

func post(tb testing.TB, url string) {
	tb.Helper()
	resp, err := http.Post(url, "", nil)
	if err != nil {
		tb.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		tb.Fatalf("POST %s: %s", url, resp.Status)
	}
}

// dirSize sums the sizes of files under root whose path relative to root passes keep.
func dirSize(tb testing.TB, root string, keep func(rel string) bool) int64 {
	tb.Helper()
	var total int64
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if !keep(filepath.ToSlash(rel)) {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		total += info.Size()
		return nil
	})
	if err != nil || total == 0 {
		tb.Fatalf("size of %s: %d bytes, %v", root, total, err)
	}
	return total
}
