package agent

import "github.com/prometheus/client_golang/prometheus"

// Label names shared by every exported series (host_name is added at export).
const (
	lService  = "service_name"
	lInstance = "service_instance_id"
	lHost     = "host_name"
	lPeer     = "peer_address"
	lPeerSvc  = "peer_service"
)

// durationBuckets are the OpenTelemetry semantic-conventions buckets for
// request durations.
var durationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

var rttBuckets = []float64{0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1}

// appMetrics are the metrics the agent exports about the node's processes
// (documented in docs/agent.md; users query these names).
type appMetrics struct {
	tcpConnections *prometheus.CounterVec
	tcpActive      *prometheus.GaugeVec
	tcpRetransmits *prometheus.CounterVec
	tcpResets      *prometheus.CounterVec
	tcpBytesSent   *prometheus.CounterVec
	tcpBytesRecv   *prometheus.CounterVec
	tcpRTT         *prometheus.HistogramVec
	httpServer     *prometheus.HistogramVec
	httpClient     *prometheus.HistogramVec
	dbClient       *prometheus.HistogramVec
	dnsLookup      *prometheus.HistogramVec
}

func newAppMetrics(reg prometheus.Registerer) *appMetrics {
	id := []string{lService, lInstance}
	with := func(extra ...string) []string { return append(append([]string(nil), id...), extra...) }
	m := &appMetrics{
		tcpConnections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tcp_connections_total",
			Help: "TCP connections opened: direction outbound (connect) or inbound (accept), result ok or failed.",
		}, with("direction", "result", lPeer)),
		tcpActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tcp_active_connections",
			Help: "TCP connections currently open.",
		}, with("direction", lPeer)),
		tcpRetransmits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tcp_retransmits_total",
			Help: "TCP segments retransmitted.",
		}, with(lPeer)),
		tcpResets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tcp_resets_total",
			Help: "TCP resets sent or received on established connections.",
		}, with("direction", lPeer)),
		tcpBytesSent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tcp_bytes_sent_total",
			Help: "Bytes sent and acknowledged by the peer (tcp_sock.bytes_acked).",
		}, with(lPeer)),
		tcpBytesRecv: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tcp_bytes_received_total",
			Help: "Bytes received (tcp_sock.bytes_received).",
		}, with(lPeer)),
		tcpRTT: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tcp_rtt_seconds",
			Help:    "Smoothed round-trip time of connections, sampled at most once per second per connection.",
			Buckets: rttBuckets,
		}, with(lPeer)),
		httpServer: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "http_server_request_duration_seconds",
			Help:    "Duration of HTTP/1.x requests served, from reading the request to writing the response headers.",
			Buckets: durationBuckets,
		}, with("http_request_method", "http_response_status_code", "http_route", "server_address", "server_port")),
		httpClient: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "http_client_request_duration_seconds",
			Help:    "Duration of HTTP/1.x requests made, from writing the request to reading the response headers.",
			Buckets: durationBuckets,
		}, with("http_request_method", "http_response_status_code", "http_route", "server_address", "server_port", lPeer)),
		dbClient: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "db_client_operation_duration_seconds",
			Help:    "Duration of database operations (PostgreSQL, MySQL, Redis) made by clients.",
			Buckets: durationBuckets,
		}, with("db_system", "db_operation_name", "error_type", lPeer)),
		dnsLookup: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "dns_lookup_duration_seconds",
			Help:    "Duration of DNS queries over UDP.",
			Buckets: durationBuckets,
		}, with("dns_question_type", "rcode")),
	}
	reg.MustRegister(m.all()...)
	return m
}

func (m *appMetrics) all() []prometheus.Collector {
	return []prometheus.Collector{m.tcpConnections, m.tcpActive, m.tcpRetransmits, m.tcpResets, m.tcpBytesSent,
		m.tcpBytesRecv, m.tcpRTT, m.httpServer, m.httpClient, m.dbClient, m.dnsLookup}
}

// deleteInstance removes every series of one process instance.
func (m *appMetrics) deleteInstance(instance string) {
	match := prometheus.Labels{lInstance: instance}
	m.tcpConnections.DeletePartialMatch(match)
	m.tcpActive.DeletePartialMatch(match)
	m.tcpRetransmits.DeletePartialMatch(match)
	m.tcpResets.DeletePartialMatch(match)
	m.tcpBytesSent.DeletePartialMatch(match)
	m.tcpBytesRecv.DeletePartialMatch(match)
	m.tcpRTT.DeletePartialMatch(match)
	m.httpServer.DeletePartialMatch(match)
	m.httpClient.DeletePartialMatch(match)
	m.dbClient.DeletePartialMatch(match)
	m.dnsLookup.DeletePartialMatch(match)
}
