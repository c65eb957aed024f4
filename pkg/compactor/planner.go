package compactor

import (
	"slices"

	"github.com/thanos-io/thanos/pkg/block/metadata"
)

// planNext returns the source blocks of the next compaction job, or nil when there is
// nothing to do. blocks are the tenant's live blocks (complete and not marked for
// deletion). ranges are ascending window sizes in milliseconds.
//
// For each range, largest first, blocks that fit entirely in the same aligned window
// [start, start+range) are grouped; the oldest group with two or more blocks whose window
// is complete is the job. Merging a group both deduplicates overlapping blocks (replicas
// of one 2h block shipped by every ingester) and joins adjacent ones into the window's
// range. A window is complete when a block starting at or after its end exists, or when
// its end is at least closeDelay before now; both mean no new block for it is expected.
// Largest first means a complete 24h window is merged in one job straight from its 2h
// blocks, without uploading intermediate 12h blocks only to mark them right away; windows
// not complete at a larger range are still merged at the smaller ranges that are.
func planNext(blocks []*metadata.Meta, ranges []int64, nowMillis, closeDelayMillis int64) []*metadata.Meta {
	if len(blocks) < 2 {
		return nil
	}
	newestMinTime := blocks[0].MinTime
	for _, b := range blocks {
		newestMinTime = max(newestMinTime, b.MinTime)
	}
	for i := len(ranges) - 1; i >= 0; i-- {
		r := ranges[i]
		windows := map[int64][]*metadata.Meta{}
		for _, b := range blocks {
			start := windowStart(b.MinTime, r)
			if b.MaxTime <= start+r {
				windows[start] = append(windows[start], b)
			}
		}
		starts := make([]int64, 0, len(windows))
		for s := range windows {
			starts = append(starts, s)
		}
		slices.Sort(starts)
		for _, start := range starts {
			group := windows[start]
			if len(group) < 2 {
				continue
			}
			end := start + r
			if newestMinTime < end && nowMillis-end < closeDelayMillis {
				continue // the window may still receive blocks
			}
			slices.SortFunc(group, func(a, b *metadata.Meta) int {
				if a.MinTime != b.MinTime {
					if a.MinTime < b.MinTime {
						return -1
					}
					return 1
				}
				return a.ULID.Compare(b.ULID)
			})
			return group
		}
	}
	return nil
}

// windowStart aligns t down to a multiple of r, also for negative timestamps.
func windowStart(t, r int64) int64 {
	s := t - t%r
	if t < 0 && t%r != 0 {
		s -= r
	}
	return s
}
