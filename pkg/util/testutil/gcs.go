package testutil

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// FakeGCS is fake-gcs-server (a GCS API emulator) on loopback with one bucket, plus a
// service-account key whose OAuth token endpoint is a local server, so a GCS client runs
// its real authentication flow without reaching Google.
type FakeGCS struct {
	// EmulatorHost is the value for STORAGE_EMULATOR_HOST, which Google's storage client
	// honours to talk to an emulator.
	EmulatorHost   string
	Bucket         string
	ServiceAccount string // JSON key
}

// StartFakeGCS starts fake-gcs-server (installed by `make test`). Without it the test is
// skipped, unless VIGIL_REQUIRE_MINIO is set (as `make test` does), in which case it fails.
func StartFakeGCS(t testing.TB) *FakeGCS {
	t.Helper()
	bin, err := exec.LookPath("fake-gcs-server")
	if err != nil {
		if os.Getenv("VIGIL_REQUIRE_MINIO") != "" {
			t.Fatalf("fake-gcs-server not found on PATH (make test installs it): %v", err)
		}
		t.Skip("fake-gcs-server not installed; run `make test` to install it")
	}
	g := &FakeGCS{Bucket: "vigil"}
	data := t.TempDir()
	if err := os.MkdirAll(filepath.Join(data, g.Bucket), 0o755); err != nil { // a directory per bucket
		t.Fatal(err)
	}
	port := FreePort(t)
	g.EmulatorHost = fmt.Sprintf("127.0.0.1:%d", port)
	var out syncWriter
	cmd := exec.Command(bin, "-scheme", "http", "-host", "127.0.0.1", "-port", fmt.Sprint(port), "-public-host", g.EmulatorHost, "-backend", "memory", "-data", data)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start fake-gcs-server: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	Eventually(t, 60*time.Second, func() error {
		c, err := net.Dial("tcp", g.EmulatorHost)
		if err != nil {
			return fmt.Errorf("fake-gcs-server not listening: %v (output: %s)", err, out.String())
		}
		return c.Close()
	})

	// The OAuth token endpoint: Google's JWT-bearer flow posts a signed assertion and gets
	// an access token back.
	tokens := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil || r.Form.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" || r.Form.Get("assertion") == "" {
			http.Error(w, "bad token request", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token":"test-token","token_type":"Bearer","expires_in":3600}`))
	}))
	t.Cleanup(tokens.Close)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	sa, err := json.Marshal(map[string]string{
		"type":           "service_account",
		"project_id":     "vigil-test",
		"private_key_id": "test",
		"private_key":    string(keyPEM),
		"client_email":   "vigil@vigil-test.iam.gserviceaccount.com",
		"client_id":      "1",
		"token_uri":      tokens.URL + "/token",
	})
	if err != nil {
		t.Fatal(err)
	}
	g.ServiceAccount = string(sa)
	return g
}
