package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/vigil-obs/vigil/pkg/util/testutil"
)

// TestAgentTelemetryArrivesInVigil: vigil-agent, pointed at a Vigil with the same flags a
// user passes, turns real HTTP traffic of an uninstrumented server into RED metrics
// queryable with PromQL and spans searchable through the Jaeger API.
func TestAgentTelemetryArrivesInVigil(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("vigil-agent loads eBPF programs and needs root (make test runs as root)")
	}
	in := startVigil(t, t.TempDir())

	bin := filepath.Join(t.TempDir(), "vigil-agent")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/vigil-obs/vigil/cmd/vigil-agent").CombinedOutput(); err != nil {
		t.Fatalf("build vigil-agent: %v\n%s", err, out)
	}
	agentAddr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	agent := exec.Command(bin,
		"-remote-write.url="+in.URL("/api/v1/push"),
		"-otlp.endpoint="+in.URL("/otlp"),
		"-remote-write.interval=1s", "-otlp.interval=1s",
		"-http.listen-address="+agentAddr,
	)
	out := &syncBuffer{}
	agent.Stdout, agent.Stderr = out, out
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = agent.Process.Kill()
		_ = agent.Wait()
		if t.Failed() {
			t.Logf("vigil-agent output:\n%s", out.String())
		}
	})
	// The agent serves its own /metrics once its hooks are attached.
	testutil.Eventually(t, 60*time.Second, func() error {
		resp, err := http.Get("http://" + agentAddr + "/metrics")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("agent /metrics: %s", resp.Status)
		}
		return nil
	})

	// An uninstrumented HTTP server and client in this process.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTeapot)
		_, _ = w.Write([]byte("short and stout"))
	})}
	go func() { _ = srv.Serve(lis) }()
	defer srv.Close()
	const n = 25
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: false}}
	for i := 0; i < n; i++ {
		resp, err := client.Get(fmt.Sprintf("http://%s/agent-e2e/%d", lis.Addr(), 1000+i))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}

	api := queryAPI(t, in, "/prometheus", "")
	ctx := context.Background()
	for _, q := range []string{
		`sum(http_server_request_duration_seconds_count{http_route="/agent-e2e/{id}",http_request_method="GET",http_response_status_code="418"})`,
		`sum(http_client_request_duration_seconds_count{http_route="/agent-e2e/{id}",http_request_method="GET",http_response_status_code="418"})`,
	} {
		testutil.Eventually(t, 60*time.Second, func() error {
			v, _, err := api.Query(ctx, q, time.Now())
			if err != nil {
				return err
			}
			if vec := v.(model.Vector); len(vec) != 1 || int(vec[0].Value) != n {
				return fmt.Errorf("%s = %v, want %d", q, vec, n)
			}
			return nil
		})
	}
	// Every series names the process and host.
	v, _, err := api.Query(ctx, `count by (service_name, host_name) (http_server_request_duration_seconds_count{http_route="/agent-e2e/{id}"})`, time.Now())
	if err != nil || len(v.(model.Vector)) != 1 || v.(model.Vector)[0].Metric["service_name"] == "" || v.(model.Vector)[0].Metric["host_name"] == "" {
		t.Fatalf("service_name/host_name labels: %v %v", v, err)
	}
	svc := string(v.(model.Vector)[0].Metric["service_name"])

	// One server span per request, searchable through the Jaeger API.
	testutil.Eventually(t, 60*time.Second, func() error {
		q := url.Values{"service": {svc}, "tags": {`{"http.route":"/agent-e2e/{id}"}`}, "limit": {"1000"}}
		resp, err := http.Get(in.URL("/jaeger/api/traces?" + q.Encode()))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var body struct {
			Data []struct {
				Spans []struct {
					OperationName string
					Tags          []struct {
						Key   string
						Value any
					}
				}
			}
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			return err
		}
		servers := 0
		for _, tr := range body.Data {
			for _, sp := range tr.Spans {
				tags := map[string]any{}
				for _, tag := range sp.Tags {
					tags[tag.Key] = tag.Value
				}
				if tags["span.kind"] != "server" || !strings.Contains(sp.OperationName, "/agent-e2e/") {
					continue
				}
				// Attributes as the semantic conventions type them (the status
				// code and port are integers, JSON numbers here; the Jaeger
				// API shows the status code under its older name).
				if tags["http.request.method"] != "GET" || tags["http.status_code"] != float64(http.StatusTeapot) ||
					tags["server.port"] == nil || !strings.HasPrefix(fmt.Sprint(tags["url.path"]), "/agent-e2e/") {
					return fmt.Errorf("server span %q has tags %v", sp.OperationName, tags)
				}
				servers++
			}
		}
		if servers != n {
			return fmt.Errorf("found %d server spans for service %s, want %d", servers, svc, n)
		}
		return nil
	})
}
