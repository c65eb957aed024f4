package testutil

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Azurite is Microsoft's Azure Storage emulator serving Blob storage on loopback.
type Azurite struct {
	AccountName      string
	ConnectionString string
}

// azuriteAccountKey is Azurite's well-known development account key (public, documented).
const azuriteAccountKey = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

// StartAzurite starts azurite-blob (installed by `make test` under .tools/azurite) on a
// free port. Without it the test is skipped, unless VIGIL_REQUIRE_MINIO is set (as `make
// test` does), in which case it fails.
func StartAzurite(t testing.TB) *Azurite {
	t.Helper()
	bin := os.Getenv("VIGIL_AZURITE_BIN")
	if bin == "" {
		bin = filepath.Join(repoRoot(t), ".tools", "azurite", "node_modules", ".bin", "azurite-blob")
	}
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("VIGIL_REQUIRE_MINIO") != "" {
			t.Fatalf("azurite-blob not found at %s (make test installs it): %v", bin, err)
		}
		t.Skip("azurite not installed; run `make test` to install it")
	}
	port := FreePort(t)
	var out syncWriter
	cmd := exec.Command(bin, "--blobHost", "127.0.0.1", "--blobPort", fmt.Sprint(port), "--location", t.TempDir(), "--skipApiVersionCheck", "--loose", "--silent")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start azurite: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	Eventually(t, 60*time.Second, func() error {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			return fmt.Errorf("azurite not listening: %v (output: %s)", err, out.String())
		}
		return c.Close()
	})
	return &Azurite{
		AccountName: "devstoreaccount1",
		ConnectionString: fmt.Sprintf("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=%s;BlobEndpoint=http://127.0.0.1:%d/devstoreaccount1;",
			azuriteAccountKey, port),
	}
}

// repoRoot finds the module root (the directory holding go.mod) above the test's directory.
func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test directory")
		}
		dir = parent
	}
}
