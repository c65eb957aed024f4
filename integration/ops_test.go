package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health/grpc_health_v1"
)

// TestOperationalEndpoints: what an operator curls first.
func TestOperationalEndpoints(t *testing.T) {
	in := startVigil(t, t.TempDir())
	for path, want := range map[string]string{
		"/ready":        "ready",
		"/metrics":      "go_goroutines",
		"/config":       "data_dir:",
		"/debug/pprof/": "goroutine",
		"/ring":         "ACTIVE", // the ingester registered itself in the ring
	} {
		resp, err := http.Get(in.URL(path))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			t.Errorf("GET %s = %d, body lacks %q:\n%.300s", path, resp.StatusCode, want, body)
		}
	}
}

// TestBadConfigNamesTheKey: a typo in YAML or a bad flag value fails start-up and says where.
func TestBadConfigNamesTheKey(t *testing.T) {
	bin := vigilBinary(t)
	dir := t.TempDir()
	for _, tc := range []struct {
		yaml string
		args []string
		want string
	}{
		{yaml: "storage:\n  backend: s3\n", want: "storage.s3.bucket-name"},
		{yaml: "storage:\n  bakend: s3\n", want: "field bakend not found"},
		{yaml: "storage:\n  bakend: s3\n", want: "storage.bakend"},
		{yaml: "ingester:\n  wal_segment_size: abc\n", want: "ingester.wal_segment_size"},
		{yaml: "limits:\n  ingestion_rate: 10\n  max_label_names_per_series: [1, 2]\n", want: "limits.max_label_names_per_series"},
		{args: []string{"-target=nope"}, want: `target: unknown role "nope"`},
		{args: []string{"-storage.backend=ftp"}, want: "storage.backend"},
	} {
		args := append([]string{"-data-dir=" + dir}, tc.args...)
		if tc.yaml != "" {
			f := dir + "/bad.yaml"
			if err := writeFile(f, tc.yaml); err != nil {
				t.Fatal(err)
			}
			args = append(args, "-config.file="+f)
		}
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err == nil {
			t.Errorf("%v %q: started, want failure", tc.args, tc.yaml)
			continue
		}
		if !strings.Contains(string(out), tc.want) {
			t.Errorf("%v %q: output %q lacks %q", tc.args, tc.yaml, out, tc.want)
		}
	}
}

// TestPrintConfig: -print.config shows the effective value from file and flag, flag winning.
func TestPrintConfig(t *testing.T) {
	bin := vigilBinary(t)
	dir := t.TempDir()
	f := dir + "/c.yaml"
	if err := writeFile(f, "multitenancy_enabled: true\nserver:\n  http_listen_port: 1234\n"); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "-config.file="+f, "-server.http-listen-port=4321", "-print.config").CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	for _, want := range []string{"multitenancy_enabled: true", "http_listen_port: 4321"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("-print.config lacks %q:\n%s", want, out)
		}
	}
}

// TestGRPCHealth: client pools (distributors, queriers) health-check instances through the
// standard gRPC health service; an instance that does not answer it gets dropped.
func TestGRPCHealth(t *testing.T) {
	in := startVigil(t, t.TempDir())
	conn, err := grpc.NewClient(fmt.Sprintf("127.0.0.1:%d", in.GRPCPort), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp, err := grpc_health_v1.NewHealthClient(conn).Check(context.Background(), &grpc_health_v1.HealthCheckRequest{})
	if err != nil || resp.Status != grpc_health_v1.HealthCheckResponse_SERVING {
		t.Fatalf("gRPC health: %v %v", resp, err)
	}
}
