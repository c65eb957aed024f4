package tracestore

import (
	"sort"
	"strings"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"
)

// spanMatcher evaluates the span-level conditions of a SearchRequest.
type spanMatcher struct {
	req  SearchRequest
	kind int32 // -1 = any
}

func newSpanMatcher(req SearchRequest) spanMatcher {
	m := spanMatcher{req: req, kind: -1}
	if req.SpanKind != "" {
		m.kind = spanKindFromString(req.SpanKind)
	}
	return m
}

func spanKindFromString(s string) int32 {
	switch strings.ToLower(strings.TrimPrefix(strings.ToLower(s), "span_kind_")) {
	case SpanKindInternal:
		return 1
	case SpanKindServer:
		return 2
	case SpanKindClient:
		return 3
	case SpanKindProducer:
		return 4
	case SpanKindConsumer:
		return 5
	case SpanKindUnspecified:
		return 0
	}
	return 99 // unknown kind matches nothing
}

func (m *spanMatcher) hasSpanConditions() bool {
	return m.req.Service != "" || m.req.Operation != "" || m.kind >= 0 || len(m.req.Attributes) > 0
}

// serviceOnly reports whether Service is the only span-level condition.
func (m *spanMatcher) serviceOnly() bool {
	return m.req.Service != "" && m.req.Operation == "" && m.kind < 0 && len(m.req.Attributes) == 0
}

// match reports whether one span satisfies all span-level conditions. Cheap
// column comparisons go first; attribute blobs are decoded only when needed.
func (m *spanMatcher) match(r *spanRow) bool {
	if m.req.Service != "" && r.Service != m.req.Service {
		return false
	}
	if m.req.Operation != "" && r.Name != m.req.Operation {
		return false
	}
	if m.kind >= 0 && r.Kind != m.kind {
		return false
	}
	if len(m.req.Attributes) == 0 {
		return true
	}
	found := make(map[string]bool, len(m.req.Attributes))
	matchStatusAttrs(r.StatusCode, m.req.Attributes, found)
	matchAttrBlob(r.Attrs, m.req.Attributes, found)
	if len(found) < len(m.req.Attributes) {
		// Resource attributes count too; their blob starts with the map.
		matchAttrBlob(r.Resource, m.req.Attributes, found)
	}
	if len(found) < len(m.req.Attributes) {
		matchFieldAttrs(r, m.req.Attributes, found)
	}
	return len(found) == len(m.req.Attributes)
}

// matchStatusAttrs matches the tags Jaeger and Zipkin users search by that translation
// derives from the span status rather than storing as attributes: `error=true` (Jaeger's and
// Zipkin's convention) and `otel.status_code=ERROR|OK|UNSET`.
func matchStatusAttrs(code int32, want map[string]string, found map[string]bool) {
	if v, ok := want["error"]; ok && code == int32(ptrace.StatusCodeError) && (v == "" || v == "true") {
		found["error"] = true
	}
	if v, ok := want["otel.status_code"]; ok {
		if v == "" || strings.EqualFold(v, ptrace.StatusCode(code).String()) {
			found["otel.status_code"] = true
		}
	}
}

// matchFieldAttrs matches the other tags the upstream translators derive
// from span fields: Zipkin's error tag carrying the status message,
// otel.status_description and span.kind.
func matchFieldAttrs(r *spanRow, want map[string]string, found map[string]bool) {
	if v, ok := want["error"]; ok && !found["error"] && r.StatusCode == int32(ptrace.StatusCodeError) && v == r.StatusMessage {
		found["error"] = true
	}
	if v, ok := want["otel.status_description"]; ok && r.StatusMessage != "" && (v == "" || v == r.StatusMessage) {
		found["otel.status_description"] = true
	}
	if v, ok := want["span.kind"]; ok && (v == "" || spanKindFromString(v) == r.Kind) {
		found["span.kind"] = true
	}
}

// isFieldAttr reports whether a search key may be answered by a span field
// instead of an attribute; block indexes cannot rule such keys out.
func isFieldAttr(k string) bool {
	switch k {
	case "error", "otel.status_code", "otel.status_description", "span.kind":
		return true
	}
	return false
}

// matchTrace checks the trace-level conditions against a summary.
func matchTrace(req SearchRequest, s *TraceSummary) bool {
	if req.MinDuration > 0 && s.Duration < req.MinDuration {
		return false
	}
	if req.MaxDuration > 0 && s.Duration > req.MaxDuration {
		return false
	}
	return overlaps(s.Start, s.Start.Add(s.Duration), req.Start, req.End)
}

// overlaps reports whether [a0, a1] intersects [b0, b1]; zero b bounds are open.
func overlaps(a0, a1, b0, b1 time.Time) bool {
	if !b1.IsZero() && a0.After(b1) {
		return false
	}
	if !b0.IsZero() && a1.Before(b0) {
		return false
	}
	return true
}

func overlapsNanos(min, max int64, b0, b1 time.Time) bool {
	return overlaps(time.Unix(0, min), time.Unix(0, max), b0, b1)
}

// summarize computes the summary of one trace from its (deduplicated) rows.
func summarize(rows []spanRow) TraceSummary {
	var s TraceSummary
	if len(rows) == 0 {
		return s
	}
	s.TraceID = rows[0].TraceID
	minStart, maxEnd := rows[0].StartUnixNano, rows[0].endUnixNano()
	// Traces touch few services: a slice beats a map here.
	services := make([]string, 0, 4)
	var root *spanRow
	for i := range rows {
		r := &rows[i]
		if r.StartUnixNano < minStart {
			minStart = r.StartUnixNano
		}
		if e := r.endUnixNano(); e > maxEnd {
			maxEnd = e
		}
		if r.StatusCode == 2 {
			s.ErrorCount++
		}
		known := false
		for _, sv := range services {
			if sv == r.Service {
				known = true
				break
			}
		}
		if !known {
			services = append(services, r.Service)
		}
		// Earliest root wins; ties by span ID keep it deterministic.
		if r.isRoot() && (root == nil || r.StartUnixNano < root.StartUnixNano ||
			(r.StartUnixNano == root.StartUnixNano && compareBytes(r.SpanID[:], root.SpanID[:]) < 0)) {
			root = r
		}
	}
	s.SpanCount = len(rows)
	s.Start = time.Unix(0, minStart).UTC()
	s.Duration = time.Duration(maxEnd - minStart)
	if root != nil {
		s.RootService, s.RootOperation = root.Service, root.Name
	}
	sort.Strings(services)
	s.Services = services
	return s
}

// mergeSummaries combines summaries of the same trace from different sources
// (head and blocks, or blocks that split a trace). Span counts are added, so
// they may overcount replicated spans; TraceByID is exact.
func mergeSummaries(a, b TraceSummary) TraceSummary {
	out := a
	endA, endB := a.Start.Add(a.Duration), b.Start.Add(b.Duration)
	if b.Start.Before(out.Start) {
		out.Start = b.Start
	}
	end := endA
	if endB.After(end) {
		end = endB
	}
	out.Duration = end.Sub(out.Start)
	if out.RootService == "" && out.RootOperation == "" {
		out.RootService, out.RootOperation = b.RootService, b.RootOperation
	}
	if b.SpanCount > out.SpanCount {
		// Replicas (several ingesters, or a block and a head holding the same
		// spans) are the common case; the larger count is the better guess.
		out.SpanCount, out.ErrorCount = b.SpanCount, b.ErrorCount
	}
	set := map[string]struct{}{}
	for _, s := range a.Services {
		set[s] = struct{}{}
	}
	for _, s := range b.Services {
		set[s] = struct{}{}
	}
	out.Services = sortedKeys(set)
	return out
}

// sortSummaries orders newest first, ties by trace ID, which makes search
// output deterministic across sources.
func sortSummaries(s []TraceSummary) {
	sort.Slice(s, func(i, j int) bool {
		if !s[i].Start.Equal(s[j].Start) {
			return s[i].Start.After(s[j].Start)
		}
		return compareBytes(s[i].TraceID[:], s[j].TraceID[:]) < 0
	})
}

func limitOf(req SearchRequest) int {
	if req.Limit <= 0 {
		return DefaultSearchLimit
	}
	return req.Limit
}

// summarySet accumulates summaries by trace ID.
type summarySet map[TraceID]TraceSummary

func (ss summarySet) add(s TraceSummary) {
	if old, ok := ss[s.TraceID]; ok {
		ss[s.TraceID] = mergeSummaries(old, s)
		return
	}
	ss[s.TraceID] = s
}

// trim drops all but the newest limit summaries.
func (ss summarySet) trim(limit int) {
	if len(ss) <= limit {
		return
	}
	keep := map[TraceID]bool{}
	for _, s := range ss.sorted(limit) {
		keep[s.TraceID] = true
	}
	for id := range ss {
		if !keep[id] {
			delete(ss, id)
		}
	}
}

func (ss summarySet) sorted(limit int) []TraceSummary {
	out := make([]TraceSummary, 0, len(ss))
	for _, s := range ss {
		out = append(out, s)
	}
	sortSummaries(out)
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out
}

// depKey identifies a service graph edge.
type depKey struct{ parent, child string }

// addDependencies adds the edges found in the rows of one trace.
func addDependencies(rows []spanRow, into map[depKey]*DependencyLink) {
	svcBySpan := make(map[[8]byte]string, len(rows))
	for i := range rows {
		svcBySpan[rows[i].SpanID] = rows[i].Service
	}
	for i := range rows {
		r := &rows[i]
		if r.isRoot() {
			continue
		}
		ps, ok := svcBySpan[r.ParentSpanID]
		if !ok || ps == r.Service {
			continue
		}
		k := depKey{ps, r.Service}
		l := into[k]
		if l == nil {
			l = &DependencyLink{Parent: ps, Child: r.Service}
			into[k] = l
		}
		l.CallCount++
		if r.StatusCode == 2 {
			l.ErrorCount++
		}
	}
}

func sortedLinks(m map[depKey]*DependencyLink) []DependencyLink {
	out := make([]DependencyLink, 0, len(m))
	for _, l := range m {
		out = append(out, *l)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Parent != out[j].Parent {
			return out[i].Parent < out[j].Parent
		}
		return out[i].Child < out[j].Child
	})
	return out
}

func mergeLinks(into map[depKey]*DependencyLink, links []DependencyLink) {
	for _, l := range links {
		k := depKey{l.Parent, l.Child}
		if cur := into[k]; cur != nil {
			cur.CallCount += l.CallCount
			cur.ErrorCount += l.ErrorCount
		} else {
			cp := l
			into[k] = &cp
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func sortOperations(ops []Operation) {
	sort.Slice(ops, func(i, j int) bool {
		if ops[i].Name != ops[j].Name {
			return ops[i].Name < ops[j].Name
		}
		return ops[i].SpanKind < ops[j].SpanKind
	})
}

// maxIndexedValues bounds the values kept per attribute key in indexes and
// autocomplete answers; keys with more distinct values (IDs, URLs with IDs)
// are high-cardinality and their values are not worth listing.
const maxIndexedValues = 64

// maxValueLen skips long values (SQL statements, stack traces) from indexes.
const maxValueLen = 256

// attrIndex collects attribute keys and bounded value sets.
type attrIndex struct {
	// only, when set, restricts indexing to one key (autocomplete values).
	only string
	Keys map[string]map[string]struct{}
	// Overflow marks keys whose distinct values exceeded maxIndexedValues.
	Overflow map[string]bool
}

func newAttrIndex() *attrIndex {
	return &attrIndex{Keys: map[string]map[string]struct{}{}, Overflow: map[string]bool{}}
}

func (a *attrIndex) add(k, v string) {
	vals, ok := a.Keys[k]
	if !ok {
		vals = map[string]struct{}{}
		a.Keys[k] = vals
	}
	if a.Overflow[k] || len(v) > maxValueLen {
		return
	}
	if _, ok := vals[v]; ok {
		return
	}
	if len(vals) >= maxIndexedValues {
		a.Overflow[k] = true
		return
	}
	vals[v] = struct{}{}
}

func (a *attrIndex) addRow(r *spanRow) {
	a.addBlob(r.Attrs)
}

// addBlob indexes an encoded attribute map without building pcommon values;
// values of keys that already overflowed are skipped undecoded.
func (a *attrIndex) addBlob(blob []byte) {
	if len(blob) == 0 {
		return
	}
	d := decoder{buf: blob}
	n := d.count()
	for i := 0; i < n && d.err == nil; i++ {
		k := d.raw()
		if a.only != "" && string(k) != a.only {
			d.skipValue()
			continue
		}
		vals, ok := a.Keys[string(k)]
		if !ok {
			vals = map[string]struct{}{}
			a.Keys[string(k)] = vals
		}
		if a.Overflow[string(k)] {
			d.skipValue()
			continue
		}
		if len(d.buf) > 0 && d.buf[0] == tagStr {
			// Look the raw bytes up first: no allocation for known values.
			d.buf = d.buf[1:]
			v := d.raw()
			if _, seen := vals[string(v)]; seen || len(v) > maxValueLen {
				continue
			}
			a.add(string(k), string(v))
			continue
		}
		a.add(string(k), d.valueString())
	}
}
