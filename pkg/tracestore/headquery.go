package tracestore

import (
	"context"
	"sort"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"
)

// The TraceIngester answers queries over its own head; the query service
// (querysvc.go) exposes these methods to queriers over gRPC.
var _ Reader = (*TraceIngester)(nil)

// existingHead returns the tenant's head without creating one; queries for a
// tenant that never pushed are answered empty.
func (i *TraceIngester) existingHead(ctx context.Context) (*tenantHead, error) {
	tenant, err := tenantFromContext(ctx)
	if err != nil {
		return nil, err
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.heads[tenant], nil
}

// TraceByID implements Reader over the head.
func (i *TraceIngester) TraceByID(ctx context.Context, id TraceID, start, end time.Time) (ptrace.Traces, bool, error) {
	h, err := i.existingHead(ctx)
	if err != nil || h == nil {
		return ptrace.NewTraces(), false, err
	}
	rows := h.headTrace(id, start, end)
	if len(rows) == 0 {
		return ptrace.NewTraces(), false, nil
	}
	td, err := rowsToTracesChecked(id, rows)
	return td, err == nil, err
}

func (i *TraceIngester) headRows(ctx context.Context, start, end time.Time) (map[TraceID][]spanRow, error) {
	h, err := i.existingHead(ctx)
	if err != nil || h == nil {
		return nil, err
	}
	return h.snapshot(start, end, nil), nil
}

// Search implements Reader over the head.
func (i *TraceIngester) Search(ctx context.Context, req SearchRequest) ([]TraceSummary, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	traces, err := i.headRows(ctx, req.Start, req.End)
	if err != nil {
		return nil, err
	}
	return searchRowSets(traces, req), nil
}

// searchRowSets evaluates a search over traces held as rows. It keeps only
// the newest `limit` matches while scanning, and checks a trace's time
// bounds before the costlier span matching and summary.
func searchRowSets(traces map[TraceID][]spanRow, req SearchRequest) []TraceSummary {
	m := newSpanMatcher(req)
	limit := limitOf(req)
	top := make([]TraceSummary, 0, limit+1)
	for id, rows := range traces {
		if len(rows) == 0 {
			continue
		}
		minStart, maxEnd := rows[0].StartUnixNano, rows[0].endUnixNano()
		for k := range rows {
			if rows[k].StartUnixNano < minStart {
				minStart = rows[k].StartUnixNano
			}
			if e := rows[k].endUnixNano(); e > maxEnd {
				maxEnd = e
			}
		}
		if len(top) == limit && olderThan(minStart, id, &top[limit-1]) {
			continue // cannot make the newest `limit`
		}
		dur := time.Duration(maxEnd - minStart)
		if (req.MinDuration > 0 && dur < req.MinDuration) || (req.MaxDuration > 0 && dur > req.MaxDuration) ||
			!overlapsNanos(minStart, maxEnd, req.Start, req.End) {
			continue
		}
		if m.hasSpanConditions() {
			hit := false
			for k := range rows {
				if m.match(&rows[k]) {
					hit = true
					break
				}
			}
			if !hit {
				continue
			}
		}
		s := summarize(rows)
		i := sort.Search(len(top), func(i int) bool { return summaryBefore(&s, &top[i]) })
		top = append(top, TraceSummary{})
		copy(top[i+1:], top[i:])
		top[i] = s
		if len(top) > limit {
			top = top[:limit]
		}
	}
	return top
}

// summaryBefore is the search order: newest start first, then trace ID.
func summaryBefore(a, b *TraceSummary) bool {
	if !a.Start.Equal(b.Start) {
		return a.Start.After(b.Start)
	}
	return compareBytes(a.TraceID[:], b.TraceID[:]) < 0
}

// olderThan reports whether a trace starting at start (unix ns) with ID id
// sorts after s.
func olderThan(start int64, id TraceID, s *TraceSummary) bool {
	if st := s.Start.UnixNano(); start != st {
		return start < st
	}
	return compareBytes(id[:], s.TraceID[:]) > 0
}

// Services implements Reader over the head.
func (i *TraceIngester) Services(ctx context.Context, start, end time.Time) ([]string, error) {
	traces, err := i.headRows(ctx, start, end)
	if err != nil {
		return nil, err
	}
	set := map[string]struct{}{}
	for _, rows := range traces {
		for k := range rows {
			set[rows[k].Service] = struct{}{}
		}
	}
	return sortedKeys(set), nil
}

// Operations implements Reader over the head.
func (i *TraceIngester) Operations(ctx context.Context, service, spanKind string, start, end time.Time) ([]Operation, error) {
	traces, err := i.headRows(ctx, start, end)
	if err != nil {
		return nil, err
	}
	kind := int32(-1)
	if spanKind != "" {
		kind = spanKindFromString(spanKind)
	}
	set := map[Operation]struct{}{}
	for _, rows := range traces {
		for k := range rows {
			r := &rows[k]
			if r.Service != service || (kind >= 0 && r.Kind != kind) {
				continue
			}
			set[Operation{Name: r.Name, SpanKind: SpanKindString(ptrace.SpanKind(r.Kind))}] = struct{}{}
		}
	}
	out := make([]Operation, 0, len(set))
	for op := range set {
		out = append(out, op)
	}
	sortOperations(out)
	return out, nil
}

// Dependencies implements Reader over the head.
func (i *TraceIngester) Dependencies(ctx context.Context, start, end time.Time) ([]DependencyLink, error) {
	traces, err := i.headRows(ctx, start, end)
	if err != nil {
		return nil, err
	}
	deps := map[depKey]*DependencyLink{}
	for _, rows := range traces {
		addDependencies(dedupCopy(rows), deps)
	}
	return sortedLinks(deps), nil
}

func dedupCopy(rows []spanRow) []spanRow {
	cp := append([]spanRow(nil), rows...)
	sortRows(cp)
	return dedupSorted(cp)
}

func (i *TraceIngester) headAttrs(ctx context.Context, start, end time.Time, only string) (*attrIndex, error) {
	traces, err := i.headRows(ctx, start, end)
	if err != nil {
		return nil, err
	}
	ix := newAttrIndex()
	ix.only = only
	seenRes := map[string]struct{}{}
	for _, rows := range traces {
		for k := range rows {
			ix.addRow(&rows[k])
			if _, ok := seenRes[string(rows[k].Resource)]; !ok {
				seenRes[string(rows[k].Resource)] = struct{}{}
				ix.addBlob(rows[k].Resource)
			}
		}
	}
	return ix, nil
}

// AttributeKeys implements Reader over the head.
func (i *TraceIngester) AttributeKeys(ctx context.Context, start, end time.Time) ([]string, error) {
	ix, err := i.headAttrs(ctx, start, end, "")
	if err != nil {
		return nil, err
	}
	return sortedKeys(ix.Keys), nil
}

// AttributeValues implements Reader over the head.
func (i *TraceIngester) AttributeValues(ctx context.Context, key string, start, end time.Time) ([]string, error) {
	if key == "" {
		return nil, nil
	}
	ix, err := i.headAttrs(ctx, start, end, key)
	if err != nil {
		return nil, err
	}
	return sortedKeys(ix.Keys[key]), nil
}
