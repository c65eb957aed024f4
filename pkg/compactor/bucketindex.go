package compactor

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/thanos-io/objstore"
)

// BucketIndexFilename is the per-tenant index object: <tenant>/bucket-index.json.gz.
const BucketIndexFilename = "bucket-index.json.gz"

// BucketIndexVersion1 is the only bucket index version so far.
const BucketIndexVersion1 = 1

// BucketIndex lists a tenant's metrics blocks and deletion marks, so readers can learn the
// bucket's content with one GET instead of listing it. Documented in docs/bucket-index.md.
type BucketIndex struct {
	Version int `json:"version"`
	// Blocks are all complete blocks (meta.json present), including blocks marked for
	// deletion; readers drop the ones in BlockDeletionMarks.
	Blocks             []BucketIndexBlock        `json:"blocks"`
	BlockDeletionMarks []BucketIndexDeletionMark `json:"block_deletion_marks"`
	// UpdatedAt is when the compactor wrote the index (unix seconds).
	UpdatedAt int64 `json:"updated_at"`
}

// BucketIndexBlock is one block of the index.
type BucketIndexBlock struct {
	ID ulid.ULID `json:"block_id"`
	// MinTime and MaxTime are the block's time range in milliseconds, MaxTime exclusive,
	// as in meta.json.
	MinTime         int64  `json:"min_time"`
	MaxTime         int64  `json:"max_time"`
	CompactionLevel int    `json:"compaction_level"`
	Source          string `json:"source,omitempty"` // thanos.source of meta.json
}

// BucketIndexDeletionMark is one block's deletion-mark.json.
type BucketIndexDeletionMark struct {
	ID           ulid.ULID `json:"block_id"`
	DeletionTime int64     `json:"deletion_time"` // unix seconds
}

// newBucketIndex builds the index of one listing, sorted by block ID (i.e. creation time).
func newBucketIndex(tb tenantBlocks, now time.Time) *BucketIndex {
	idx := &BucketIndex{
		Version:            BucketIndexVersion1,
		Blocks:             []BucketIndexBlock{},
		BlockDeletionMarks: []BucketIndexDeletionMark{},
		UpdatedAt:          now.Unix(),
	}
	for _, m := range tb.metas {
		idx.Blocks = append(idx.Blocks, BucketIndexBlock{
			ID: m.ULID, MinTime: m.MinTime, MaxTime: m.MaxTime,
			CompactionLevel: m.Compaction.Level, Source: string(m.Thanos.Source),
		})
	}
	for id, m := range tb.marks {
		idx.BlockDeletionMarks = append(idx.BlockDeletionMarks, BucketIndexDeletionMark{ID: id, DeletionTime: m.DeletionTime})
	}
	slices.SortFunc(idx.Blocks, func(a, b BucketIndexBlock) int { return a.ID.Compare(b.ID) })
	slices.SortFunc(idx.BlockDeletionMarks, func(a, b BucketIndexDeletionMark) int { return a.ID.Compare(b.ID) })
	return idx
}

// writeBucketIndex uploads idx as <tenant>/bucket-index.json.gz. Object stores replace
// objects atomically, so readers see the old or the new index, never a mix.
func writeBucketIndex(ctx context.Context, bkt objstore.Bucket, tenant string, idx *BucketIndex) error {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	if err := json.NewEncoder(gz).Encode(idx); err != nil {
		return fmt.Errorf("encode bucket index of tenant %q: %w", tenant, err)
	}
	if err := gz.Close(); err != nil {
		return fmt.Errorf("compress bucket index of tenant %q: %w", tenant, err)
	}
	if err := bkt.Upload(ctx, path.Join(tenant, BucketIndexFilename), &buf); err != nil {
		return fmt.Errorf("upload bucket index of tenant %q: %w", tenant, err)
	}
	return nil
}

// ReadBucketIndex reads <tenant>/bucket-index.json.gz.
func ReadBucketIndex(ctx context.Context, bkt objstore.BucketReader, tenant string) (*BucketIndex, error) {
	rc, err := bkt.Get(ctx, path.Join(tenant, BucketIndexFilename))
	if err != nil {
		return nil, fmt.Errorf("get bucket index of tenant %q: %w", tenant, err)
	}
	defer rc.Close()
	gz, err := gzip.NewReader(rc)
	if err != nil {
		return nil, fmt.Errorf("decompress bucket index of tenant %q: %w", tenant, err)
	}
	defer gz.Close()
	var idx BucketIndex
	if err := json.NewDecoder(gz).Decode(&idx); err != nil {
		return nil, fmt.Errorf("decode bucket index of tenant %q: %w", tenant, err)
	}
	if idx.Version != BucketIndexVersion1 {
		return nil, fmt.Errorf("bucket index of tenant %q: unsupported version %d", tenant, idx.Version)
	}
	return &idx, nil
}
