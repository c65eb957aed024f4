package bucket

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/thanos-io/objstore"

	"github.com/vigil-obs/vigil/pkg/util/testutil"
)

func TestValidateNamesTheKey(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Backend: "ftp"}, "storage.backend"},
		{Config{Backend: Filesystem}, "storage.filesystem.dir"},
		{Config{Backend: S3, S3: S3Config{Endpoint: "x"}}, "storage.s3.bucket-name"},
		{Config{Backend: S3, S3: S3Config{BucketName: "b", Endpoint: "http://x"}}, "storage.s3.endpoint"},
		{Config{Backend: GCS}, "storage.gcs.bucket-name"},
		{Config{Backend: Azure, Azure: AzureConfig{ContainerName: "c"}}, "storage.azure.account-name"},
	} {
		err := tc.cfg.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), tc.want+":") {
			t.Errorf("Validate(%+v) = %v, want error naming %s", tc.cfg, err, tc.want)
		}
	}
}

func TestFilesystemClientAndTenantPrefix(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	bkt, err := NewClient(ctx, Config{Backend: Filesystem, Filesystem: FilesystemConfig{Dir: dir}}, "test", slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	a := ForTenant(bkt, "team-a")
	if err := a.Upload(ctx, "01ABC/meta.json", bytes.NewReader([]byte("{}"))); err != nil {
		t.Fatal(err)
	}
	ok, err := bkt.Exists(ctx, "team-a/01ABC/meta.json")
	if err != nil || !ok {
		t.Fatalf("object not under tenant prefix: exists=%v err=%v", ok, err)
	}
	b := ForTenant(bkt, "team-b")
	if ok, _ := b.Exists(ctx, "01ABC/meta.json"); ok {
		t.Fatal("tenant b sees tenant a's object")
	}
	rc, err := a.Get(ctx, "01ABC/meta.json")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, _ := io.ReadAll(rc)
	if string(got) != "{}" {
		t.Fatalf("read back %q", got)
	}
}

func TestS3AgainstMinIO(t *testing.T) {
	m := testutil.StartMinIO(t)
	ctx := context.Background()
	cfg := Config{Backend: S3, S3: S3Config{
		Endpoint: m.Endpoint, BucketName: m.Bucket, AccessKeyID: m.AccessKey, Insecure: true, PathStyle: true,
	}}
	if err := cfg.S3.SecretAccessKey.Set(m.SecretKey); err != nil {
		t.Fatal(err)
	}
	bkt, err := NewClient(ctx, cfg, "s3-test", slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, ctx, bkt)
}

func TestAzureAgainstAzurite(t *testing.T) {
	az := testutil.StartAzurite(t)
	ctx := context.Background()
	cfg := Config{Backend: Azure, Azure: AzureConfig{AccountName: az.AccountName, ContainerName: "vigil"}}
	if err := cfg.Azure.ConnectionString.Set(az.ConnectionString); err != nil {
		t.Fatal(err)
	}
	bkt, err := NewClient(ctx, cfg, "azure-test", slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, ctx, bkt)
}

// roundTrip writes through a tenant-scoped client and reads back with listing and range
// reads: the operations shipping and the store-gateway use.
func roundTrip(t *testing.T, ctx context.Context, bkt objstore.Bucket) {
	t.Helper()
	tb := ForTenant(bkt, "team-a")
	if err := tb.Upload(ctx, "01ABC/index", bytes.NewReader([]byte("index-bytes"))); err != nil {
		t.Fatalf("upload to minio: %v", err)
	}
	var names []string
	if err := bkt.Iter(ctx, "team-a/01ABC/", func(name string) error { names = append(names, name); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(names) != 1 || names[0] != "team-a/01ABC/index" {
		t.Fatalf("listing = %v, want [team-a/01ABC/index]", names)
	}
	rc, err := tb.GetRange(ctx, "01ABC/index", 6, 5)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, _ := io.ReadAll(rc)
	if string(got) != "bytes" {
		t.Fatalf("range read = %q, want %q", got, "bytes")
	}
}

func TestGCSAgainstFakeGCS(t *testing.T) {
	g := testutil.StartFakeGCS(t)
	t.Setenv("STORAGE_EMULATOR_HOST", g.EmulatorHost)
	ctx := context.Background()
	cfg := Config{Backend: GCS, GCS: GCSConfig{BucketName: g.Bucket}}
	if err := cfg.GCS.ServiceAccount.Set(g.ServiceAccount); err != nil {
		t.Fatal(err)
	}
	bkt, err := NewClient(ctx, cfg, "gcs-test", slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, ctx, bkt)
}
