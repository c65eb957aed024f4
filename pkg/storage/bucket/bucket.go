// Package bucket builds the object-storage client every Vigil component shares. Blocks of
// every tenant live in one bucket under a per-tenant prefix; ForTenant scopes a client to it.
package bucket

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"strings"

	"github.com/grafana/dskit/flagext"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/thanos-io/objstore"
	"github.com/thanos-io/objstore/providers/azure"
	"github.com/thanos-io/objstore/providers/filesystem"
	"github.com/thanos-io/objstore/providers/gcs"
	"github.com/thanos-io/objstore/providers/s3"

	"github.com/vigil-obs/vigil/pkg/util/logutil"
)

// Backend names accepted by -storage.backend.
const (
	Filesystem = "filesystem"
	S3         = "s3"
	GCS        = "gcs"
	Azure      = "azure"
)

var supportedBackends = []string{Filesystem, S3, GCS, Azure}

// Config selects and configures the object-storage backend.
type Config struct {
	Backend    string           `yaml:"backend"`
	Filesystem FilesystemConfig `yaml:"filesystem"`
	S3         S3Config         `yaml:"s3"`
	GCS        GCSConfig        `yaml:"gcs"`
	Azure      AzureConfig      `yaml:"azure"`
}

// FilesystemConfig stores objects as files under a directory: the embedded default.
type FilesystemConfig struct {
	// Dir defaults to <data-dir>/bucket; the binary fills it in when empty.
	Dir string `yaml:"dir"`
}

// S3Config reaches AWS S3 or anything that speaks its API (MinIO, Ceph, R2).
type S3Config struct {
	Endpoint        string         `yaml:"endpoint"`
	BucketName      string         `yaml:"bucket_name"`
	Region          string         `yaml:"region"`
	AccessKeyID     string         `yaml:"access_key_id"`
	SecretAccessKey flagext.Secret `yaml:"secret_access_key"`
	SessionToken    flagext.Secret `yaml:"session_token"`
	Insecure        bool           `yaml:"insecure"`
	// PathStyle forces path-style addressing, which MinIO and most self-hosted S3 need.
	PathStyle bool `yaml:"path_style"`
}

// GCSConfig reaches Google Cloud Storage.
type GCSConfig struct {
	BucketName     string         `yaml:"bucket_name"`
	ServiceAccount flagext.Secret `yaml:"service_account"`
}

// AzureConfig reaches Azure Blob Storage.
type AzureConfig struct {
	AccountName      string         `yaml:"account_name"`
	AccountKey       flagext.Secret `yaml:"account_key"`
	ConnectionString flagext.Secret `yaml:"connection_string"`
	ContainerName    string         `yaml:"container_name"`
	Endpoint         string         `yaml:"endpoint_suffix"`
}

// RegisterFlags registers the storage flags (named as Mimir's -blocks-storage.* flags, minus
// the prefix, since Vigil has a single bucket).
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	f.StringVar(&c.Backend, "storage.backend", Filesystem, "Object storage backend. One of: "+strings.Join(supportedBackends, ", ")+".")
	f.StringVar(&c.Filesystem.Dir, "storage.filesystem.dir", "", "Directory of the filesystem bucket. Defaults to <data-dir>/bucket.")

	f.StringVar(&c.S3.Endpoint, "storage.s3.endpoint", "", "S3 endpoint (host[:port]) without scheme, e.g. s3.eu-west-1.amazonaws.com or 127.0.0.1:9000.")
	f.StringVar(&c.S3.BucketName, "storage.s3.bucket-name", "", "S3 bucket name.")
	f.StringVar(&c.S3.Region, "storage.s3.region", "", "S3 region. Empty lets the client discover it.")
	f.StringVar(&c.S3.AccessKeyID, "storage.s3.access-key-id", "", "S3 access key ID. Empty uses the AWS SDK's default credential chain.")
	f.Var(&c.S3.SecretAccessKey, "storage.s3.secret-access-key", "S3 secret access key.")
	f.Var(&c.S3.SessionToken, "storage.s3.session-token", "S3 session token.")
	f.BoolVar(&c.S3.Insecure, "storage.s3.insecure", false, "Use plain HTTP instead of HTTPS to reach the S3 endpoint.")
	f.BoolVar(&c.S3.PathStyle, "storage.s3.path-style", false, "Use path-style addressing (bucket in the path, not the host name); needed by MinIO and most self-hosted S3.")

	f.StringVar(&c.GCS.BucketName, "storage.gcs.bucket-name", "", "GCS bucket name.")
	f.Var(&c.GCS.ServiceAccount, "storage.gcs.service-account", "JSON of a GCS service account. Empty uses Google's default credentials.")

	f.StringVar(&c.Azure.AccountName, "storage.azure.account-name", "", "Azure storage account name.")
	f.Var(&c.Azure.AccountKey, "storage.azure.account-key", "Azure storage account key.")
	f.Var(&c.Azure.ConnectionString, "storage.azure.connection-string", "Azure storage connection string; replaces the account key (e.g. for Azurite or a custom blob endpoint).")
	f.StringVar(&c.Azure.ContainerName, "storage.azure.container-name", "", "Azure blob container name.")
	f.StringVar(&c.Azure.Endpoint, "storage.azure.endpoint-suffix", "", "Azure endpoint suffix. Empty means blob.core.windows.net.")
}

// Validate names the first configuration key that makes the backend unusable.
func (c *Config) Validate() error {
	switch c.Backend {
	case Filesystem:
		if c.Filesystem.Dir == "" {
			return errors.New("storage.filesystem.dir: must be set for the filesystem backend")
		}
	case S3:
		if c.S3.BucketName == "" {
			return errors.New("storage.s3.bucket-name: must be set for the s3 backend")
		}
		if c.S3.Endpoint == "" {
			return errors.New("storage.s3.endpoint: must be set for the s3 backend")
		}
		if strings.Contains(c.S3.Endpoint, "://") {
			return fmt.Errorf("storage.s3.endpoint: %q must be host[:port] without a scheme; use storage.s3.insecure for http", c.S3.Endpoint)
		}
	case GCS:
		if c.GCS.BucketName == "" {
			return errors.New("storage.gcs.bucket-name: must be set for the gcs backend")
		}
	case Azure:
		if c.Azure.ContainerName == "" {
			return errors.New("storage.azure.container-name: must be set for the azure backend")
		}
		if c.Azure.AccountName == "" {
			return errors.New("storage.azure.account-name: must be set for the azure backend")
		}
		if c.Azure.AccountKey.String() != "" && c.Azure.ConnectionString.String() != "" {
			return errors.New("storage.azure.account-key: set either it or storage.azure.connection-string, not both")
		}
	default:
		return fmt.Errorf("storage.backend: unknown backend %q, want one of %s", c.Backend, strings.Join(supportedBackends, ", "))
	}
	return nil
}

// NewClient returns a bucket client for cfg, instrumented with objstore's operation metrics
// labelled bucket=name.
func NewClient(ctx context.Context, cfg Config, name string, logger *slog.Logger, reg prometheus.Registerer) (objstore.InstrumentedBucket, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	gl := logutil.GoKit(logger)
	var (
		bkt objstore.Bucket
		err error
	)
	switch cfg.Backend {
	case Filesystem:
		bkt, err = filesystem.NewBucket(cfg.Filesystem.Dir)
	case S3:
		sc := s3.DefaultConfig
		sc.Bucket = cfg.S3.BucketName
		sc.Endpoint = cfg.S3.Endpoint
		sc.Region = cfg.S3.Region
		sc.AccessKey = cfg.S3.AccessKeyID
		sc.SecretKey = cfg.S3.SecretAccessKey.String()
		sc.SessionToken = cfg.S3.SessionToken.String()
		sc.Insecure = cfg.S3.Insecure
		if cfg.S3.PathStyle {
			sc.BucketLookupType = s3.PathLookup
		}
		bkt, err = s3.NewBucketWithConfig(gl, sc, name, nil)
	case GCS:
		gc := gcs.DefaultConfig
		gc.Bucket = cfg.GCS.BucketName
		gc.ServiceAccount = cfg.GCS.ServiceAccount.String()
		bkt, err = gcs.NewBucketWithConfig(ctx, gl, gc, name, nil)
	case Azure:
		ac := azure.DefaultConfig
		ac.StorageAccountName = cfg.Azure.AccountName
		ac.StorageAccountKey = cfg.Azure.AccountKey.String()
		ac.StorageConnectionString = cfg.Azure.ConnectionString.String()
		ac.ContainerName = cfg.Azure.ContainerName
		if cfg.Azure.Endpoint != "" {
			ac.Endpoint = cfg.Azure.Endpoint
		}
		bkt, err = azure.NewBucketWithConfig(gl, ac, name, nil)
	}
	if err != nil {
		return nil, fmt.Errorf("create %s bucket client: %w", cfg.Backend, err)
	}
	// objstore labels its metrics bucket=name itself.
	return objstore.WrapWithMetrics(bkt, reg, name), nil
}

// ForTenant scopes bkt to the tenant's prefix, so a component holding it cannot reach another
// tenant's objects by accident. The tenant must have been validated (tenant.Validate).
func ForTenant(bkt objstore.Bucket, tenantID string) objstore.Bucket {
	return objstore.NewPrefixedBucket(bkt, tenantID)
}
