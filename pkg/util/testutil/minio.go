package testutil

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// MinIO is a real MinIO server on loopback with one bucket, started for one test.
type MinIO struct {
	Endpoint  string // host:port, no scheme
	Bucket    string
	AccessKey string
	SecretKey string
}

// StartMinIO starts the `minio` binary (installed by `make test`) on a free loopback port
// and creates a bucket. Without the binary the test is skipped, unless VIGIL_REQUIRE_MINIO
// is set (as `make test` does), in which case it fails: CI must never silently skip S3.
func StartMinIO(t testing.TB) *MinIO {
	t.Helper()
	bin, err := exec.LookPath("minio")
	if err != nil {
		if os.Getenv("VIGIL_REQUIRE_MINIO") != "" {
			t.Fatalf("minio binary not found on PATH (make test installs it): %v", err)
		}
		t.Skip("minio not installed; run `make test` to install it")
	}
	m := &MinIO{
		Endpoint:  fmt.Sprintf("127.0.0.1:%d", FreePort(t)),
		Bucket:    "vigil",
		AccessKey: "vigil-test",
		SecretKey: "vigil-test-secret",
	}
	consolePort := FreePort(t)
	var out syncWriter
	cmd := exec.Command(bin, "server", t.TempDir(), "--address", m.Endpoint, "--console-address", fmt.Sprintf("127.0.0.1:%d", consolePort), "--quiet")
	cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+m.AccessKey, "MINIO_ROOT_PASSWORD="+m.SecretKey, "MINIO_BROWSER=off", "MINIO_UPDATE=off")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start minio: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	Eventually(t, 60*time.Second, func() error {
		resp, err := http.Get("http://" + m.Endpoint + "/minio/health/ready")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("minio not ready: %s (output: %s)", resp.Status, out.String())
		}
		return nil
	})
	if err := createBucket(context.Background(), m); err != nil {
		t.Fatalf("create minio bucket: %v (output: %s)", err, out.String())
	}
	return m
}

// createBucket makes the test bucket; objstore's S3 client never creates buckets, as in
// production where operators do.
func createBucket(ctx context.Context, m *MinIO) error {
	c, err := minio.New(m.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(m.AccessKey, m.SecretKey, ""), Secure: false})
	if err != nil {
		return err
	}
	return c.MakeBucket(ctx, m.Bucket, minio.MakeBucketOptions{})
}

// syncWriter collects a child process's output for error messages.
type syncWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}
