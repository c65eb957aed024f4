// Package integration holds end-to-end tests: they build the real vigil binary, start it on
// free loopback ports and talk to it with the clients users run (Prometheus' remote-write
// client, OpenTelemetry SDK exporters, client_golang's API client, ...).
package integration

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-obs/vigil/pkg/util/testutil"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// vigilBinary builds cmd/vigil once per test run.
func vigilBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "vigil-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "vigil")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/vigil-obs/vigil/cmd/vigil").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// instance is one running vigil process.
type instance struct {
	t        testing.TB
	args     []string
	dataDir  string
	HTTPPort int
	GRPCPort int
	OTLPGRPC int
	OTLPHTTP int
	Zipkin   int
	Jaeger   int
	// Memberlist is the gossip port, for -memberlist.join of other instances.
	Memberlist int
	cmd        *exec.Cmd
	exited     chan struct{}
	out        *syncBuffer
}

// startVigil starts the binary with every listener on a free loopback port and waits for
// /ready. extra flags come last and win. If another process took one of the chosen ports in
// the meantime, it starts again on new ones.
func startVigil(t testing.TB, dataDir string, extra ...string) *instance {
	t.Helper()
	for attempt := 1; ; attempt++ {
		in := &instance{
			t: t, dataDir: dataDir,
			HTTPPort: testutil.FreePort(t), GRPCPort: testutil.FreePort(t),
			OTLPGRPC: testutil.FreePort(t), OTLPHTTP: testutil.FreePort(t),
			Zipkin: testutil.FreePort(t), Jaeger: testutil.FreePort(t),
			Memberlist: testutil.FreePort(t),
		}
		in.args = append([]string{
			"-data-dir=" + dataDir,
			"-server.http-listen-address=127.0.0.1", fmt.Sprintf("-server.http-listen-port=%d", in.HTTPPort),
			"-server.grpc-listen-address=127.0.0.1", fmt.Sprintf("-server.grpc-listen-port=%d", in.GRPCPort),
			fmt.Sprintf("-memberlist.bind-port=%d", in.Memberlist),
			fmt.Sprintf("-otlp.grpc-listen-address=127.0.0.1:%d", in.OTLPGRPC),
			fmt.Sprintf("-otlp.http-listen-address=127.0.0.1:%d", in.OTLPHTTP),
			fmt.Sprintf("-zipkin.listen-address=127.0.0.1:%d", in.Zipkin),
			fmt.Sprintf("-jaeger.grpc-listen-address=127.0.0.1:%d", in.Jaeger),
			"-log.level=warn",
		}, extra...)
		if err := in.tryStart(); err != nil {
			if attempt < 3 && strings.Contains(err.Error(), "address already in use") {
				t.Logf("port taken, starting again on new ports: %v", err)
				continue
			}
			t.Fatal(err)
		}
		t.Cleanup(in.stop)
		return in
	}
}

func (in *instance) start() {
	in.t.Helper()
	if err := in.tryStart(); err != nil {
		in.t.Fatal(err)
	}
}

// tryStart starts the process and waits for /ready; an error carries the process output
// when it exited during start-up.
func (in *instance) tryStart() error {
	in.t.Helper()
	in.out = &syncBuffer{}
	in.cmd = exec.Command(vigilBinary(in.t), in.args...)
	in.cmd.Stdout, in.cmd.Stderr = in.out, in.out
	if err := in.cmd.Start(); err != nil {
		return fmt.Errorf("start vigil: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = in.cmd.Wait(); close(exited) }()
	in.exited = exited
	deadline := time.Now().Add(90 * time.Second)
	for {
		select {
		case <-exited:
			in.cmd = nil
			return fmt.Errorf("vigil exited during start-up:\n%s", in.out.String())
		default:
		}
		resp, err := http.Get(in.URL("/ready"))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("/ready: %s", resp.Status)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("vigil not ready within 90s: %v\n%s", err, in.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill9 kills the process with SIGKILL: no shutdown hooks, no flushes.
func (in *instance) kill9() {
	if in.cmd == nil {
		return
	}
	_ = in.cmd.Process.Signal(syscall.SIGKILL)
	<-in.exited
	in.cmd = nil
}

// restart starts the process again with the same flags and data directory.
func (in *instance) restart() { in.start() }

func (in *instance) stop() {
	if in.cmd == nil {
		return
	}
	_ = in.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-in.exited:
	case <-time.After(30 * time.Second):
		_ = in.cmd.Process.Signal(syscall.SIGKILL)
		<-in.exited
	}
	if in.t.Failed() {
		in.t.Logf("vigil output:\n%s", in.out.String())
	}
	in.cmd = nil
}

// URL returns the address of path on the main HTTP port.
func (in *instance) URL(path string) string {
	return fmt.Sprintf("http://127.0.0.1:%d%s", in.HTTPPort, path)
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
