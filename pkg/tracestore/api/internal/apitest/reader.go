// Package apitest provides an in-memory tracestore.Reader for testing the
// query APIs without the storage engine. It follows the Reader contract
// (tenant from ctx, sorted lists, newest-first search) on small data sets.
package apitest

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/grafana/dskit/user"
	"github.com/vigil-obs/vigil/pkg/tracestore"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// Reader is an in-memory tracestore.Reader.
type Reader struct {
	mtx    sync.Mutex
	traces map[string]map[tracestore.TraceID]ptrace.Traces
	// Calls records the last search request, so tests can check parsing.
	LastSearch tracestore.SearchRequest
	// Err, when set, is returned by every method.
	Err error
}

var _ tracestore.Reader = (*Reader)(nil)

// New returns an empty Reader.
func New() *Reader {
	return &Reader{traces: map[string]map[tracestore.TraceID]ptrace.Traces{}}
}

// Add stores td's spans for tenant.
func (r *Reader) Add(tenant string, td ptrace.Traces) {
	r.mtx.Lock()
	defer r.mtx.Unlock()
	if r.traces[tenant] == nil {
		r.traces[tenant] = map[tracestore.TraceID]ptrace.Traces{}
	}
	forEach(td, func(rs ptrace.ResourceSpans, ss ptrace.ScopeSpans, s ptrace.Span) {
		id := tracestore.TraceID(s.TraceID())
		t, ok := r.traces[tenant][id]
		if !ok {
			t = ptrace.NewTraces()
			r.traces[tenant][id] = t
		}
		nrs := t.ResourceSpans().AppendEmpty()
		rs.Resource().CopyTo(nrs.Resource())
		nss := nrs.ScopeSpans().AppendEmpty()
		ss.Scope().CopyTo(nss.Scope())
		s.CopyTo(nss.Spans().AppendEmpty())
	})
}

func forEach(td ptrace.Traces, fn func(ptrace.ResourceSpans, ptrace.ScopeSpans, ptrace.Span)) {
	for i := 0; i < td.ResourceSpans().Len(); i++ {
		rs := td.ResourceSpans().At(i)
		for j := 0; j < rs.ScopeSpans().Len(); j++ {
			ss := rs.ScopeSpans().At(j)
			for k := 0; k < ss.Spans().Len(); k++ {
				fn(rs, ss, ss.Spans().At(k))
			}
		}
	}
}

func (r *Reader) tenant(ctx context.Context) (map[tracestore.TraceID]ptrace.Traces, error) {
	if r.Err != nil {
		return nil, r.Err
	}
	id, err := user.ExtractOrgID(ctx)
	if err != nil {
		return nil, fmt.Errorf("apitest reader: %w", err)
	}
	return r.traces[id], nil
}

func service(rs ptrace.ResourceSpans) string {
	v, _ := rs.Resource().Attributes().Get("service.name")
	return v.AsString()
}

// Summarize computes a TraceSummary the way the contract defines it.
func Summarize(id tracestore.TraceID, td ptrace.Traces) tracestore.TraceSummary {
	sum := tracestore.TraceSummary{TraceID: id}
	var start, end pcommon.Timestamp
	svcs := map[string]bool{}
	forEach(td, func(rs ptrace.ResourceSpans, _ ptrace.ScopeSpans, s ptrace.Span) {
		sum.SpanCount++
		if s.Status().Code() == ptrace.StatusCodeError {
			sum.ErrorCount++
		}
		svcs[service(rs)] = true
		if start == 0 || s.StartTimestamp() < start {
			start = s.StartTimestamp()
		}
		if s.EndTimestamp() > end {
			end = s.EndTimestamp()
		}
		if s.ParentSpanID().IsEmpty() {
			sum.RootService, sum.RootOperation = service(rs), s.Name()
		}
	})
	for s := range svcs {
		sum.Services = append(sum.Services, s)
	}
	sort.Strings(sum.Services)
	sum.Start = start.AsTime()
	sum.Duration = end.AsTime().Sub(sum.Start)
	return sum
}

// TraceByID implements tracestore.Reader.
func (r *Reader) TraceByID(ctx context.Context, id tracestore.TraceID, _, _ time.Time) (ptrace.Traces, bool, error) {
	r.mtx.Lock()
	defer r.mtx.Unlock()
	m, err := r.tenant(ctx)
	if err != nil {
		return ptrace.Traces{}, false, err
	}
	t, ok := m[id]
	if !ok {
		return ptrace.NewTraces(), false, nil
	}
	out := ptrace.NewTraces()
	t.CopyTo(out)
	return out, true, nil
}

func matches(req tracestore.SearchRequest, rs ptrace.ResourceSpans, s ptrace.Span) bool {
	if req.Service != "" && service(rs) != req.Service {
		return false
	}
	if req.Operation != "" && s.Name() != req.Operation {
		return false
	}
	if req.SpanKind != "" && tracestore.SpanKindString(s.Kind()) != req.SpanKind {
		return false
	}
	for k, want := range req.Attributes {
		v, ok := s.Attributes().Get(k)
		if !ok {
			v, ok = rs.Resource().Attributes().Get(k)
		}
		if !ok || (want != "" && v.AsString() != want) {
			return false
		}
	}
	return true
}

// Search implements tracestore.Reader.
func (r *Reader) Search(ctx context.Context, req tracestore.SearchRequest) ([]tracestore.TraceSummary, error) {
	r.mtx.Lock()
	defer r.mtx.Unlock()
	r.LastSearch = req
	if err := req.Validate(); err != nil {
		return nil, err
	}
	m, err := r.tenant(ctx)
	if err != nil {
		return nil, err
	}
	var out []tracestore.TraceSummary
	for id, td := range m {
		hit := false
		forEach(td, func(rs ptrace.ResourceSpans, _ ptrace.ScopeSpans, s ptrace.Span) {
			hit = hit || matches(req, rs, s)
		})
		if !hit {
			continue
		}
		sum := Summarize(id, td)
		if sum.Duration < req.MinDuration || (req.MaxDuration > 0 && sum.Duration > req.MaxDuration) {
			continue
		}
		if !req.Start.IsZero() && sum.Start.Add(sum.Duration).Before(req.Start) {
			continue
		}
		if !req.End.IsZero() && sum.Start.After(req.End) {
			continue
		}
		out = append(out, sum)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Start.Equal(out[j].Start) {
			return out[i].Start.After(out[j].Start)
		}
		return out[i].TraceID.String() < out[j].TraceID.String()
	})
	limit := req.Limit
	if limit <= 0 {
		limit = tracestore.DefaultSearchLimit
	}
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// Services implements tracestore.Reader.
func (r *Reader) Services(ctx context.Context, _, _ time.Time) ([]string, error) {
	r.mtx.Lock()
	defer r.mtx.Unlock()
	m, err := r.tenant(ctx)
	if err != nil {
		return nil, err
	}
	set := map[string]bool{}
	for _, td := range m {
		forEach(td, func(rs ptrace.ResourceSpans, _ ptrace.ScopeSpans, _ ptrace.Span) { set[service(rs)] = true })
	}
	return sorted(set), nil
}

func sorted(set map[string]bool) []string {
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Operations implements tracestore.Reader.
func (r *Reader) Operations(ctx context.Context, svc, spanKind string, _, _ time.Time) ([]tracestore.Operation, error) {
	r.mtx.Lock()
	defer r.mtx.Unlock()
	m, err := r.tenant(ctx)
	if err != nil {
		return nil, err
	}
	set := map[tracestore.Operation]bool{}
	for _, td := range m {
		forEach(td, func(rs ptrace.ResourceSpans, _ ptrace.ScopeSpans, s ptrace.Span) {
			kind := tracestore.SpanKindString(s.Kind())
			if service(rs) == svc && (spanKind == "" || kind == spanKind) {
				set[tracestore.Operation{Name: s.Name(), SpanKind: kind}] = true
			}
		})
	}
	out := make([]tracestore.Operation, 0, len(set))
	for op := range set {
		out = append(out, op)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].SpanKind < out[j].SpanKind
	})
	return out, nil
}

// Dependencies implements tracestore.Reader.
func (r *Reader) Dependencies(ctx context.Context, _, _ time.Time) ([]tracestore.DependencyLink, error) {
	r.mtx.Lock()
	defer r.mtx.Unlock()
	m, err := r.tenant(ctx)
	if err != nil {
		return nil, err
	}
	type edge struct{ p, c string }
	links := map[edge]*tracestore.DependencyLink{}
	for _, td := range m {
		owner := map[pcommon.SpanID]string{}
		forEach(td, func(rs ptrace.ResourceSpans, _ ptrace.ScopeSpans, s ptrace.Span) { owner[s.SpanID()] = service(rs) })
		forEach(td, func(rs ptrace.ResourceSpans, _ ptrace.ScopeSpans, s ptrace.Span) {
			parent, ok := owner[s.ParentSpanID()]
			if s.ParentSpanID().IsEmpty() || !ok || parent == service(rs) {
				return
			}
			e := edge{parent, service(rs)}
			l, ok := links[e]
			if !ok {
				l = &tracestore.DependencyLink{Parent: e.p, Child: e.c}
				links[e] = l
			}
			l.CallCount++
			if s.Status().Code() == ptrace.StatusCodeError {
				l.ErrorCount++
			}
		})
	}
	out := make([]tracestore.DependencyLink, 0, len(links))
	for _, l := range links {
		out = append(out, *l)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Parent != out[j].Parent {
			return out[i].Parent < out[j].Parent
		}
		return out[i].Child < out[j].Child
	})
	return out, nil
}

// AttributeKeys implements tracestore.Reader.
func (r *Reader) AttributeKeys(ctx context.Context, _, _ time.Time) ([]string, error) {
	r.mtx.Lock()
	defer r.mtx.Unlock()
	m, err := r.tenant(ctx)
	if err != nil {
		return nil, err
	}
	set := map[string]bool{}
	for _, td := range m {
		forEach(td, func(rs ptrace.ResourceSpans, _ ptrace.ScopeSpans, s ptrace.Span) {
			for k := range s.Attributes().All() {
				set[k] = true
			}
			for k := range rs.Resource().Attributes().All() {
				set[k] = true
			}
		})
	}
	return sorted(set), nil
}

// AttributeValues implements tracestore.Reader.
func (r *Reader) AttributeValues(ctx context.Context, key string, _, _ time.Time) ([]string, error) {
	r.mtx.Lock()
	defer r.mtx.Unlock()
	m, err := r.tenant(ctx)
	if err != nil {
		return nil, err
	}
	set := map[string]bool{}
	for _, td := range m {
		forEach(td, func(rs ptrace.ResourceSpans, _ ptrace.ScopeSpans, s ptrace.Span) {
			if v, ok := s.Attributes().Get(key); ok {
				set[v.AsString()] = true
			}
			if v, ok := rs.Resource().Attributes().Get(key); ok {
				set[v.AsString()] = true
			}
		})
	}
	return sorted(set), nil
}
