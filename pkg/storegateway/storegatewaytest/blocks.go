// Package storegatewaytest builds Thanos-valid TSDB blocks in a bucket for tests of the
// store-gateway, the querier and end-to-end suites.
package storegatewaytest

import (
	"context"
	"fmt"
	"log/slog"
	"path"
	"path/filepath"

	"github.com/go-kit/log"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/thanos-io/objstore"
	"github.com/thanos-io/thanos/pkg/block/metadata"
)

// BlockOptions tune WriteBlock.
type BlockOptions struct {
	// DownsampleResolution is written to meta.json (0 = raw block).
	DownsampleResolution int64
	// SkipMeta leaves meta.json out, like an upload still in progress.
	SkipMeta bool
}

// WriteBlock writes series as one block for tenant into bkt at <tenant>/<ULID>/ with a
// Thanos meta.json (labels tenant_id=<tenant>), uploading meta.json last. tmpDir is scratch
// space (e.g. t.TempDir()).
func WriteBlock(ctx context.Context, bkt objstore.Bucket, tmpDir, tenant string, series []storage.Series, opts BlockOptions) (ulid.ULID, error) {
	// chunkRange only bounds head chunk cutting here; a day keeps every series in one block.
	bdir, err := tsdb.CreateBlock(series, tmpDir, 24*60*60*1000, slog.New(slog.DiscardHandler))
	if err != nil {
		return ulid.ULID{}, fmt.Errorf("create block: %w", err)
	}
	meta, err := metadata.InjectThanos(log.NewNopLogger(), bdir, metadata.Thanos{
		Labels:     map[string]string{"tenant_id": tenant},
		Downsample: metadata.ThanosDownsample{Resolution: opts.DownsampleResolution},
		Source:     metadata.ReceiveSource,
	}, nil)
	if err != nil {
		return ulid.ULID{}, fmt.Errorf("write thanos meta: %w", err)
	}
	dst := path.Join(tenant, meta.ULID.String())
	if err := objstore.UploadDir(ctx, log.NewNopLogger(), bkt, filepath.Join(bdir, "chunks"), path.Join(dst, "chunks")); err != nil {
		return ulid.ULID{}, fmt.Errorf("upload chunks: %w", err)
	}
	if err := objstore.UploadFile(ctx, log.NewNopLogger(), bkt, filepath.Join(bdir, "index"), path.Join(dst, "index")); err != nil {
		return ulid.ULID{}, fmt.Errorf("upload index: %w", err)
	}
	if !opts.SkipMeta {
		if err := objstore.UploadFile(ctx, log.NewNopLogger(), bkt, filepath.Join(bdir, metadata.MetaFilename), path.Join(dst, metadata.MetaFilename)); err != nil {
			return ulid.ULID{}, fmt.Errorf("upload meta.json: %w", err)
		}
	}
	return meta.ULID, nil
}
