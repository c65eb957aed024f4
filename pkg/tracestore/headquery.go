package tracestore

import (
	"context"
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

// searchRowSets evaluates a search over traces held as rows.
func searchRowSets(traces map[TraceID][]spanRow, req SearchRequest) []TraceSummary {
	m := newSpanMatcher(req)
	out := summarySet{}
	for _, rows := range traces {
		s := summarize(rows)
		if !matchTrace(req, &s) {
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
		out.add(s)
	}
	return out.sorted(limitOf(req))
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

func (i *TraceIngester) headAttrs(ctx context.Context, start, end time.Time) (*attrIndex, error) {
	traces, err := i.headRows(ctx, start, end)
	if err != nil {
		return nil, err
	}
	ix := newAttrIndex()
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
	ix, err := i.headAttrs(ctx, start, end)
	if err != nil {
		return nil, err
	}
	return sortedKeys(ix.Keys), nil
}

// AttributeValues implements Reader over the head.
func (i *TraceIngester) AttributeValues(ctx context.Context, key string, start, end time.Time) ([]string, error) {
	ix, err := i.headAttrs(ctx, start, end)
	if err != nil {
		return nil, err
	}
	return sortedKeys(ix.Keys[key]), nil
}
