package compactor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/thanos-io/objstore"
	"github.com/thanos-io/thanos/pkg/block/metadata"
)

// tenantBlocks is one listing of a tenant's metrics blocks in the bucket.
type tenantBlocks struct {
	// metas holds every block whose meta.json exists, marked for deletion or not.
	metas map[ulid.ULID]*metadata.Meta
	// marks holds every block with a deletion-mark.json, including blocks whose meta.json
	// is already gone (a deletion that was interrupted).
	marks map[ulid.ULID]*metadata.DeletionMark
}

// live returns the blocks to plan with: complete and not marked for deletion, oldest first.
func (tb tenantBlocks) live() []*metadata.Meta {
	out := make([]*metadata.Meta, 0, len(tb.metas))
	for id, m := range tb.metas {
		if _, marked := tb.marks[id]; !marked {
			out = append(out, m)
		}
	}
	slices.SortFunc(out, func(a, b *metadata.Meta) int { return a.ULID.Compare(b.ULID) })
	return out
}

// listBlocks reads the meta.json and deletion-mark.json of every <tenant>/<ULID>/ dir.
// Dirs with neither are uploads in progress (or abandoned) and are left alone.
func listBlocks(ctx context.Context, bkt objstore.Bucket, tenant string) (tenantBlocks, error) {
	tb := tenantBlocks{metas: map[ulid.ULID]*metadata.Meta{}, marks: map[ulid.ULID]*metadata.DeletionMark{}}
	var ids []ulid.ULID
	err := bkt.Iter(ctx, tenant+"/", func(name string) error {
		if !strings.HasSuffix(name, "/") {
			return nil
		}
		if id, err := ulid.Parse(path.Base(strings.TrimSuffix(name, "/"))); err == nil {
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		return tb, fmt.Errorf("list blocks of tenant %q: %w", tenant, err)
	}
	for _, id := range ids {
		dir := path.Join(tenant, id.String())
		meta, err := readMeta(ctx, bkt, dir)
		if err != nil {
			return tb, err
		}
		if meta != nil {
			tb.metas[id] = meta
		}
		mark, err := readDeletionMark(ctx, bkt, dir)
		if err != nil {
			return tb, err
		}
		if mark != nil {
			tb.marks[id] = mark
		}
	}
	return tb, nil
}

// readMeta returns nil without error when dir has no meta.json.
func readMeta(ctx context.Context, bkt objstore.Bucket, dir string) (*metadata.Meta, error) {
	rc, err := bkt.Get(ctx, path.Join(dir, metadata.MetaFilename))
	if bkt.IsObjNotFoundErr(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get meta.json of %s: %w", dir, err)
	}
	meta, err := metadata.Read(rc) // closes rc
	if err != nil {
		return nil, fmt.Errorf("parse meta.json of %s: %w", dir, err)
	}
	return meta, nil
}

// readDeletionMark returns nil without error when dir has no deletion mark.
func readDeletionMark(ctx context.Context, bkt objstore.Bucket, dir string) (*metadata.DeletionMark, error) {
	rc, err := bkt.Get(ctx, path.Join(dir, metadata.DeletionMarkFilename))
	if bkt.IsObjNotFoundErr(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get deletion mark of %s: %w", dir, err)
	}
	defer rc.Close()
	var m metadata.DeletionMark
	if err := json.NewDecoder(rc).Decode(&m); err != nil {
		return nil, fmt.Errorf("parse deletion mark of %s: %w", dir, err)
	}
	return &m, nil
}

// writeDeletionMark marks a block for deletion in Thanos' format, so Thanos tools and
// Vigil's store-gateway both stop using it.
func writeDeletionMark(ctx context.Context, bkt objstore.Bucket, tenant string, id ulid.ULID, now time.Time, details string) error {
	b, err := json.Marshal(metadata.DeletionMark{
		ID:           id,
		Version:      metadata.DeletionMarkVersion1,
		Details:      details,
		DeletionTime: now.Unix(),
	})
	if err != nil {
		return fmt.Errorf("encode deletion mark of %s: %w", id, err)
	}
	name := path.Join(tenant, id.String(), metadata.DeletionMarkFilename)
	if err := bkt.Upload(ctx, name, bytes.NewReader(b)); err != nil {
		return fmt.Errorf("upload %s: %w", name, err)
	}
	return nil
}

// downloadBlock copies meta.json, index and chunks of <tenant>/<id>/ into dst.
func downloadBlock(ctx context.Context, bkt objstore.Bucket, tenant string, id ulid.ULID, dst string) error {
	prefix := path.Join(tenant, id.String()) + "/"
	var names []string
	err := bkt.Iter(ctx, prefix, func(name string) error {
		rel := strings.TrimPrefix(name, prefix)
		if rel == metadata.MetaFilename || rel == "index" || strings.HasPrefix(rel, "chunks/") {
			names = append(names, name)
		}
		return nil
	}, objstore.WithRecursiveIter())
	if err != nil {
		return fmt.Errorf("list files of block %s: %w", prefix, err)
	}
	for _, name := range names {
		local := filepath.Join(dst, filepath.FromSlash(strings.TrimPrefix(name, prefix)))
		if err := downloadFile(ctx, bkt, name, local); err != nil {
			return err
		}
	}
	return nil
}

func downloadFile(ctx context.Context, bkt objstore.Bucket, name, local string) error {
	if err := os.MkdirAll(filepath.Dir(local), 0o755); err != nil {
		return fmt.Errorf("create dir for %s: %w", local, err)
	}
	rc, err := bkt.Get(ctx, name)
	if err != nil {
		return fmt.Errorf("get %s: %w", name, err)
	}
	defer rc.Close()
	f, err := os.Create(local)
	if err != nil {
		return fmt.Errorf("create %s: %w", local, err)
	}
	if _, err := io.Copy(f, rc); err != nil {
		_ = f.Close()
		return fmt.Errorf("download %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", local, err)
	}
	return nil
}

// uploadBlock uploads the local block dir to <tenant>/<ULID>/: chunks, index, and
// meta.json last, so the block becomes visible only when complete. On failure it removes
// what it uploaded (meta.json first), so no partial block is left behind.
func uploadBlock(ctx context.Context, bkt objstore.Bucket, tenant string, meta *metadata.Meta, dir string) (err error) {
	prefix := path.Join(tenant, meta.ULID.String())
	var rels []string
	entries, err := os.ReadDir(filepath.Join(dir, "chunks"))
	if err != nil {
		return fmt.Errorf("list chunks of %s: %w", dir, err)
	}
	for _, e := range entries { // os.ReadDir sorts by name
		if !e.IsDir() {
			rels = append(rels, path.Join("chunks", e.Name()))
		}
	}
	rels = append(rels, "index", metadata.MetaFilename)

	var uploaded []string
	defer func() {
		if err == nil {
			return
		}
		// A fresh context: the job's may be what was cancelled.
		cleanupCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		var errs []error
		for _, rel := range append([]string{metadata.MetaFilename}, uploaded...) {
			if derr := bkt.Delete(cleanupCtx, path.Join(prefix, rel)); derr != nil && !bkt.IsObjNotFoundErr(derr) {
				errs = append(errs, derr)
			}
		}
		if len(errs) > 0 {
			err = fmt.Errorf("%w (cleaning up the partial upload also failed: %w)", err, errors.Join(errs...))
		}
	}()
	for _, rel := range rels {
		if err := uploadFile(ctx, bkt, filepath.Join(dir, filepath.FromSlash(rel)), path.Join(prefix, rel)); err != nil {
			return err
		}
		uploaded = append(uploaded, rel)
	}
	return nil
}

func uploadFile(ctx context.Context, bkt objstore.Bucket, local, name string) error {
	f, err := os.Open(local)
	if err != nil {
		return fmt.Errorf("open %s: %w", local, err)
	}
	defer f.Close()
	if err := bkt.Upload(ctx, name, f); err != nil {
		return fmt.Errorf("upload %s: %w", name, err)
	}
	return nil
}

// deleteBlock removes a marked block: meta.json first, so an interrupted deletion never
// leaves a visible block with missing files, then the data, and the deletion mark last,
// so the next run still knows to finish the job.
func deleteBlock(ctx context.Context, bkt objstore.Bucket, tenant string, id ulid.ULID) error {
	prefix := path.Join(tenant, id.String())
	if err := bkt.Delete(ctx, path.Join(prefix, metadata.MetaFilename)); err != nil && !bkt.IsObjNotFoundErr(err) {
		return fmt.Errorf("delete meta.json of %s: %w", prefix, err)
	}
	var names []string
	err := bkt.Iter(ctx, prefix+"/", func(name string) error {
		if path.Base(name) != metadata.DeletionMarkFilename {
			names = append(names, name)
		}
		return nil
	}, objstore.WithRecursiveIter())
	if err != nil {
		return fmt.Errorf("list files of %s: %w", prefix, err)
	}
	for _, name := range names {
		if err := bkt.Delete(ctx, name); err != nil && !bkt.IsObjNotFoundErr(err) {
			return fmt.Errorf("delete %s: %w", name, err)
		}
	}
	if err := bkt.Delete(ctx, path.Join(prefix, metadata.DeletionMarkFilename)); err != nil && !bkt.IsObjNotFoundErr(err) {
		return fmt.Errorf("delete deletion mark of %s: %w", prefix, err)
	}
	return nil
}
