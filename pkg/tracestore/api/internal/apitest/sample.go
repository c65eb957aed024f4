package apitest

import (
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// TraceA is the ID of the sample's three-span trace.
func TraceA() pcommon.TraceID {
	return pcommon.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36}
}

// TraceB is the ID of the sample's one-span trace.
func TraceB() pcommon.TraceID {
	return pcommon.TraceID{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0b}
}

// Sample returns two traces:
//   - A at t0: frontend "GET /checkout" (server, error, http.status_code=500)
//     → frontend "POST /pay" (client, with an event and a link)
//     → payments "charge" (server, attributes of every type);
//   - B at t0+1m: payments "reconcile" (internal, 5ms, env=prod).
func Sample(t0 time.Time) ptrace.Traces {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "frontend")
	rs.Resource().Attributes().PutStr("host.name", "web-1")
	ss := rs.ScopeSpans().AppendEmpty()
	ss.Scope().SetName("vigil-test")

	root := ss.Spans().AppendEmpty()
	root.SetTraceID(TraceA())
	root.SetSpanID(pcommon.SpanID{0, 0, 0, 0, 0, 0, 0, 1})
	root.SetName("GET /checkout")
	root.SetKind(ptrace.SpanKindServer)
	root.SetStartTimestamp(pcommon.NewTimestampFromTime(t0))
	root.SetEndTimestamp(pcommon.NewTimestampFromTime(t0.Add(120 * time.Millisecond)))
	root.Attributes().PutInt("http.status_code", 500)
	root.Attributes().PutStr("http.method", "GET")
	root.Status().SetCode(ptrace.StatusCodeError)

	cli := ss.Spans().AppendEmpty()
	cli.SetTraceID(TraceA())
	cli.SetSpanID(pcommon.SpanID{0, 0, 0, 0, 0, 0, 0, 2})
	cli.SetParentSpanID(root.SpanID())
	cli.SetName("POST /pay")
	cli.SetKind(ptrace.SpanKindClient)
	cli.SetStartTimestamp(pcommon.NewTimestampFromTime(t0.Add(10 * time.Millisecond)))
	cli.SetEndTimestamp(pcommon.NewTimestampFromTime(t0.Add(90 * time.Millisecond)))
	ev := cli.Events().AppendEmpty()
	ev.SetName("retry")
	ev.SetTimestamp(pcommon.NewTimestampFromTime(t0.Add(20 * time.Millisecond)))
	ev.Attributes().PutInt("attempt", 2)
	link := cli.Links().AppendEmpty()
	link.SetTraceID(TraceB())
	link.SetSpanID(pcommon.SpanID{0, 0, 0, 0, 0, 0, 0, 9})

	rs2 := td.ResourceSpans().AppendEmpty()
	rs2.Resource().Attributes().PutStr("service.name", "payments")
	srv := rs2.ScopeSpans().AppendEmpty().Spans().AppendEmpty()
	srv.SetTraceID(TraceA())
	srv.SetSpanID(pcommon.SpanID{0, 0, 0, 0, 0, 0, 0, 3})
	srv.SetParentSpanID(cli.SpanID())
	srv.SetName("charge")
	srv.SetKind(ptrace.SpanKindServer)
	srv.SetStartTimestamp(pcommon.NewTimestampFromTime(t0.Add(20 * time.Millisecond)))
	srv.SetEndTimestamp(pcommon.NewTimestampFromTime(t0.Add(80 * time.Millisecond)))
	srv.Attributes().PutStr("payment.method", "card")
	srv.Attributes().PutBool("retried", true)
	srv.Attributes().PutDouble("amount", 12.5)
	srv.Attributes().PutInt("big", 9007199254740993)
	srv.Attributes().PutEmptyBytes("blob").FromRaw([]byte{0, 0, 0x30, 0x39})

	rs3 := td.ResourceSpans().AppendEmpty()
	rs3.Resource().Attributes().PutStr("service.name", "payments")
	b := rs3.ScopeSpans().AppendEmpty().Spans().AppendEmpty()
	b.SetTraceID(TraceB())
	b.SetSpanID(pcommon.SpanID{0, 0, 0, 0, 0, 0, 0, 9})
	b.SetName("reconcile")
	b.SetKind(ptrace.SpanKindInternal)
	b.SetStartTimestamp(pcommon.NewTimestampFromTime(t0.Add(time.Minute)))
	b.SetEndTimestamp(pcommon.NewTimestampFromTime(t0.Add(time.Minute + 5*time.Millisecond)))
	b.Attributes().PutStr("env", "prod")
	return td
}
