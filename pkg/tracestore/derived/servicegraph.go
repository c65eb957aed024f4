package derived

import (
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// edgeKey pairs the two sides of a call: the client span's own ID equals
// the server span's parent ID.
type edgeKey struct {
	trace pcommon.TraceID
	span  pcommon.SpanID
}

// edge is a call seen from one or both sides.
type edge struct {
	expires time.Time
	traceID pcommon.TraceID

	client, server          string
	hasClient, hasServer    bool
	clientSecs, serverSecs  float64
	clientFailed, srvFailed bool
	connType                string
	peer                    string // virtual server name from the client's attributes
	peerIsDatabase          bool
}

func attr(span ptrace.Span, key string) string {
	if v, ok := span.Attributes().Get(key); ok {
		return v.AsString()
	}
	return ""
}

// serviceGraph records one span; false when it had to be dropped because
// the tenant's edge store or series budget is full.
func (g *Generator) serviceGraph(ts *tenantState, service string, span ptrace.Span, now time.Time) bool {
	failed := span.Status().Code() == ptrace.StatusCodeError
	secs := durationSeconds(span)
	switch span.Kind() {
	case ptrace.SpanKindClient, ptrace.SpanKindProducer:
		key := edgeKey{span.TraceID(), span.SpanID()}
		e, ok := g.edgeFor(ts, key, now)
		if !ok {
			return g.dropSpan(ts, service, "", now)
		}
		e.client, e.hasClient, e.clientSecs, e.clientFailed = service, true, secs, failed
		if span.Kind() == ptrace.SpanKindProducer {
			e.connType = ConnMessagingSystem
		}
		// Attributes naming an uninstrumented server, in order of precedence
		// (Tempo's defaults); databases have their own order.
		if attr(span, "db.name") != "" || attr(span, "db.system") != "" {
			e.peerIsDatabase = true
			for _, k := range [...]string{"peer.service", "server.address", "db.name", "db.system"} {
				if v := attr(span, k); v != "" {
					e.peer = v
					break
				}
			}
		} else {
			for _, k := range [...]string{"peer.service", "db.name", "db.system"} {
				if v := attr(span, k); v != "" {
					e.peer = v
					break
				}
			}
		}
		e.traceID = span.TraceID()
		return g.completeIfPaired(ts, key, e, now)
	case ptrace.SpanKindServer, ptrace.SpanKindConsumer:
		if span.ParentSpanID().IsEmpty() {
			// A root server span: the caller is not instrumented (a browser,
			// curl); Tempo draws it as the virtual node "user".
			if span.Kind() == ptrace.SpanKindServer {
				return g.recordEdge(ts, &edge{client: "user", server: service, hasServer: true, serverSecs: secs, srvFailed: failed, connType: ConnVirtualNode, traceID: span.TraceID()}, now)
			}
			return true
		}
		key := edgeKey{span.TraceID(), span.ParentSpanID()}
		e, ok := g.edgeFor(ts, key, now)
		if !ok {
			return g.dropSpan(ts, "", service, now)
		}
		e.server, e.hasServer, e.serverSecs, e.srvFailed = service, true, secs, failed
		if span.Kind() == ptrace.SpanKindConsumer {
			e.connType = ConnMessagingSystem
		}
		if e.traceID.IsEmpty() {
			e.traceID = span.TraceID()
		}
		return g.completeIfPaired(ts, key, e, now)
	}
	return true
}

func (g *Generator) edgeFor(ts *tenantState, key edgeKey, now time.Time) (*edge, bool) {
	if e, ok := ts.edges[key]; ok {
		return e, true
	}
	if g.cfg.ServiceGraphMaxEdge > 0 && len(ts.edges) >= g.cfg.ServiceGraphMaxEdge {
		// Make room from edges that have waited long enough before giving up.
		g.expireEdges(ts, now, false)
		if len(ts.edges) >= g.cfg.ServiceGraphMaxEdge {
			return nil, false
		}
	}
	e := &edge{expires: now.Add(g.cfg.ServiceGraphWait)}
	ts.edges[key] = e
	return e, true
}

func (g *Generator) dropSpan(ts *tenantState, client, server string, now time.Time) bool {
	return ts.reg.addCounter(MetricDroppedSpans, edgeLabels(client, server, ""), 1, now, pcommon.TraceID{})
}

func (g *Generator) completeIfPaired(ts *tenantState, key edgeKey, e *edge, now time.Time) bool {
	if !e.hasClient || !e.hasServer {
		return true
	}
	delete(ts.edges, key)
	return g.recordEdge(ts, e, now)
}

func edgeLabels(client, server, connType string) []label {
	lbls := []label{{"client", client}}
	// An empty connection type is an absent label in Prometheus; leave it
	// out rather than write an empty value.
	if connType != "" {
		lbls = append(lbls, label{"connection_type", connType})
	}
	return append(lbls, label{"server", server})
}

func (g *Generator) recordEdge(ts *tenantState, e *edge, now time.Time) bool {
	lbls := edgeLabels(e.client, e.server, e.connType)
	ok := ts.reg.addCounter(MetricRequestTotal, lbls, 1, now, e.traceID)
	if e.clientFailed || e.srvFailed {
		ok = ts.reg.addCounter(MetricRequestFailedTotal, lbls, 1, now, e.traceID) && ok
	}
	if e.hasServer {
		ok = ts.reg.observe(MetricServerSeconds, lbls, g.cfg.ServiceGraphBuckets, e.serverSecs, now, e.traceID) && ok
	}
	if e.hasClient {
		ok = ts.reg.observe(MetricClientSeconds, lbls, g.cfg.ServiceGraphBuckets, e.clientSecs, now, e.traceID) && ok
	}
	return ok
}

// expireEdges settles edges whose wait is over (all of them when force):
// a client span calling an uninstrumented peer becomes an edge to a virtual
// node; anything else counts as unpaired.
func (g *Generator) expireEdges(ts *tenantState, now time.Time, force bool) {
	for key, e := range ts.edges {
		if !force && now.Before(e.expires) {
			continue
		}
		delete(ts.edges, key)
		switch {
		case e.hasClient && e.peer != "":
			// Only the client measured this call: no server latency.
			e.server = e.peer
			if e.peerIsDatabase {
				e.connType = ConnDatabase
			} else if e.connType == "" {
				e.connType = ConnVirtualNode
			}
			g.recordEdge(ts, e, now)
		case e.hasClient:
			ts.reg.addCounter(MetricUnpairedSpans, edgeLabels(e.client, "", e.connType), 1, now, pcommon.TraceID{})
		case e.hasServer:
			ts.reg.addCounter(MetricUnpairedSpans, edgeLabels("", e.server, e.connType), 1, now, pcommon.TraceID{})
		}
	}
}
