// Command promreceiver is the reference side of Vigil's benchmarks: Prometheus' own
// remote-write receiver (storage/remote write handler) over a plain tsdb.DB, with the
// Prometheus API (promql engine) for query benchmarks. It runs as a separate process so its
// CPU and memory are measured exactly as Vigil's are.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	remoteapi "github.com/prometheus/client_golang/exp/api/remote"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage/remote"
	"github.com/prometheus/prometheus/tsdb"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "HTTP listen address; the bound address is printed on stdout.")
	dir := flag.String("dir", "", "TSDB directory.")
	flag.Parse()
	if err := run(*listen, *dir); err != nil {
		fmt.Fprintln(os.Stderr, "promreceiver:", err)
		os.Exit(1)
	}
}

func run(listen, dir string) error {
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	reg := prometheus.NewRegistry()
	opts := tsdb.DefaultOptions()
	opts.MaxExemplars = 100000
	db, err := tsdb.Open(dir, logger, reg, opts, nil)
	if err != nil {
		return fmt.Errorf("open tsdb: %w", err)
	}
	defer db.Close()

	engine := promql.NewEngine(promql.EngineOpts{
		Logger: logger, MaxSamples: 50_000_000, Timeout: 2 * time.Minute,
		LookbackDelta: 5 * time.Minute, EnableAtModifier: true, EnableNegativeOffset: true,
	})
	mux := http.NewServeMux()
	mux.Handle("/api/v1/write", remote.NewWriteHandler(logger, reg, db, remoteapi.MessageTypes{remoteapi.WriteV1MessageType, remoteapi.WriteV2MessageType}, false, false, true))
	mux.HandleFunc("/api/v1/query_range", queryRangeHandler(engine, db))
	mux.HandleFunc("/compact", compactHandler(db))

	lis, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	fmt.Println(lis.Addr().String())
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(lis) }()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	return srv.Shutdown(context.Background())
}

// queryRangeHandler evaluates a range query with the Prometheus engine over the TSDB and
// returns the result as JSON: enough for benchmarks to compare engine work, not a full API.
func queryRangeHandler(engine *promql.Engine, db *tsdb.DB) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		start, err1 := parseUnix(r.Form.Get("start"))
		end, err2 := parseUnix(r.Form.Get("end"))
		step, err3 := time.ParseDuration(r.Form.Get("step"))
		if err1 != nil || err2 != nil || err3 != nil {
			http.Error(w, "bad start/end/step", http.StatusBadRequest)
			return
		}
		q, err := engine.NewRangeQuery(r.Context(), db, nil, r.Form.Get("query"), start, end, step)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		defer q.Close()
		res := q.Exec(r.Context())
		if res.Err != nil {
			http.Error(w, res.Err.Error(), http.StatusUnprocessableEntity)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if err := json.NewEncoder(w).Encode(map[string]any{"status": "success", "data": map[string]any{"resultType": res.Value.Type(), "result": res.Value}}); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	}
}

func parseUnix(s string) (time.Time, error) {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return time.Time{}, err
	}
	return time.UnixMilli(int64(f * 1000)), nil
}

// compactHandler cuts the whole head into a block, as Prometheus does every two hours, so
// benchmarks can compare block sizes for the same samples.
func compactHandler(db *tsdb.DB) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		head := db.Head()
		if err := db.CompactHead(tsdb.NewRangeHead(head, head.MinTime(), head.MaxTime())); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}
