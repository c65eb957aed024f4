package tracestore

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand"
	"testing"
	"time"

	"github.com/grafana/dskit/user"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
)

// genOpts describes synthetic traces for tests and benchmarks.
type genOpts struct {
	traces        int
	spansPerTrace int
	services      []string
	attrsPerSpan  int
	base          time.Time
	seed          int64
}

func testTraceID(seed int64, i int) TraceID {
	var id TraceID
	binary.BigEndian.PutUint64(id[:8], uint64(seed)+0x1000)
	binary.BigEndian.PutUint64(id[8:], uint64(i)+1)
	// Scramble so IDs look random but stay reproducible.
	h := mix64(uint64(seed)<<32 | uint64(i))
	binary.BigEndian.PutUint64(id[:8], h)
	return id
}

// genTraces builds traces with a root server span in services[0] and children
// alternating client/server across services; every span carries attrsPerSpan
// attributes of mixed types, some low- and one high-cardinality.
func genTraces(o genOpts) ptrace.Traces {
	if len(o.services) == 0 {
		o.services = []string{"frontend", "cart", "checkout"}
	}
	if o.spansPerTrace == 0 {
		o.spansPerTrace = 4
	}
	if o.base.IsZero() {
		o.base = time.Now().Add(-time.Minute)
	}
	rnd := rand.New(rand.NewSource(o.seed))
	td := ptrace.NewTraces()
	rsBySvc := map[string]ptrace.SpanSlice{}
	for _, svc := range o.services {
		rs := td.ResourceSpans().AppendEmpty()
		rs.Resource().Attributes().PutStr("service.name", svc)
		rs.Resource().Attributes().PutStr("host.name", "host-"+svc)
		rs.Resource().Attributes().PutStr("k8s.namespace.name", "prod")
		ss := rs.ScopeSpans().AppendEmpty()
		ss.Scope().SetName("io.opentelemetry.contrib.http")
		ss.Scope().SetVersion("1.2.3")
		rsBySvc[svc] = ss.Spans()
	}
	for t := 0; t < o.traces; t++ {
		tid := testTraceID(o.seed, t)
		start := o.base.Add(time.Duration(t) * time.Millisecond)
		var parents [][8]byte
		for s := 0; s < o.spansPerTrace; s++ {
			svc := o.services[s%len(o.services)]
			sp := rsBySvc[svc].AppendEmpty()
			sp.SetTraceID(pcommon.TraceID(tid))
			var sid [8]byte
			binary.BigEndian.PutUint64(sid[:], rnd.Uint64()|1)
			sp.SetSpanID(sid)
			if s > 0 {
				sp.SetParentSpanID(parents[(s-1)/2])
			}
			parents = append(parents, sid)
			sp.SetName(fmt.Sprintf("%s /api/v1/op%d", []string{"GET", "POST"}[s%2], s%5))
			switch {
			case s == 0:
				sp.SetKind(ptrace.SpanKindServer)
			case s%2 == 1:
				sp.SetKind(ptrace.SpanKindClient)
			default:
				sp.SetKind(ptrace.SpanKindServer)
			}
			// Children get nanosecond jitter like real clocks; the root's
			// start and duration stay exact so tests can assert on them.
			st := start.Add(time.Duration(s)*time.Millisecond + time.Duration(rnd.Int63n(int64(time.Millisecond))))
			dur := time.Duration(10_000 + rnd.Int63n(5_000_000))
			if s == 0 {
				st = start
				dur = time.Duration(o.spansPerTrace+10) * time.Millisecond
			}
			sp.SetStartTimestamp(pcommon.NewTimestampFromTime(st))
			sp.SetEndTimestamp(pcommon.NewTimestampFromTime(st.Add(dur)))
			if rnd.Intn(20) == 0 {
				sp.Status().SetCode(ptrace.StatusCodeError)
				sp.Status().SetMessage("upstream timeout")
			}
			a := sp.Attributes()
			for k := 0; k < o.attrsPerSpan; k++ {
				switch k {
				case 0:
					a.PutStr("http.method", []string{"GET", "POST"}[s%2])
				case 1:
					a.PutInt("http.status_code", []int64{200, 200, 200, 404, 500}[rnd.Intn(5)])
				case 2:
					a.PutStr("http.route", fmt.Sprintf("/api/v1/op%d", s%5))
				case 3:
					a.PutStr("user.id", fmt.Sprintf("user-%d", rnd.Intn(100000)))
				case 4:
					a.PutBool("cache.hit", rnd.Intn(2) == 0)
				case 5:
					a.PutStr("net.peer.name", o.services[(s+1)%len(o.services)])
				case 6:
					a.PutDouble("sampling.ratio", 0.25)
				case 7:
					a.PutStr("region", []string{"eu-west-1", "us-east-1"}[t%2])
				case 8:
					a.PutInt("retry.count", int64(rnd.Intn(3)))
				default:
					a.PutStr(fmt.Sprintf("custom.attr%d", k), "v")
				}
			}
			if s == 0 && t%10 == 0 {
				ev := sp.Events().AppendEmpty()
				ev.SetName("exception")
				ev.SetTimestamp(pcommon.NewTimestampFromTime(st.Add(time.Microsecond)))
				ev.Attributes().PutStr("exception.message", "boom")
			}
		}
	}
	return td
}

func tenantCtx(tenant string) context.Context {
	return user.InjectOrgID(context.Background(), tenant)
}

// spanIDs returns the set of span IDs in td, failing on duplicates.
func spanIDs(t testing.TB, td ptrace.Traces) map[[8]byte]bool {
	t.Helper()
	out := map[[8]byte]bool{}
	rss := td.ResourceSpans()
	for i := 0; i < rss.Len(); i++ {
		sss := rss.At(i).ScopeSpans()
		for j := 0; j < sss.Len(); j++ {
			sp := sss.At(j).Spans()
			for k := 0; k < sp.Len(); k++ {
				id := [8]byte(sp.At(k).SpanID())
				if out[id] {
					t.Fatalf("duplicate span %x", id)
				}
				out[id] = true
			}
		}
	}
	return out
}

// filterTrace returns a copy of td with only the spans of one trace.
func filterTrace(td ptrace.Traces, id TraceID) ptrace.Traces {
	out := ptrace.NewTraces()
	td.CopyTo(out)
	out.ResourceSpans().RemoveIf(func(rs ptrace.ResourceSpans) bool {
		rs.ScopeSpans().RemoveIf(func(ss ptrace.ScopeSpans) bool {
			ss.Spans().RemoveIf(func(s ptrace.Span) bool { return TraceID(s.TraceID()) != id })
			return ss.Spans().Len() == 0
		})
		return rs.ScopeSpans().Len() == 0
	})
	return out
}

func exportReq(td ptrace.Traces) ptraceotlp.ExportRequest {
	return ptraceotlp.NewExportRequestFromTraces(td)
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
