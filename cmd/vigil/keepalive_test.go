package main

import (
	"flag"
	"testing"
)

// The server must accept the keepalive pings of Vigil's own gRPC clients,
// which ping idle connections too: otherwise it answers GOAWAY
// "too_many_pings" and the connection between roles breaks with the RPCs in
// flight on it.
func TestServerAcceptsOwnClientsKeepalive(t *testing.T) {
	var cfg Config
	cfg.RegisterFlags(flag.NewFlagSet("vigil", flag.PanicOnError))
	if cfg.IngesterClient.KeepaliveTime <= 0 {
		t.Skip("ingester client keepalive disabled by default")
	}
	if got, ping := cfg.Server.GRPCServerMinTimeBetweenPings, cfg.IngesterClient.KeepaliveTime; got > ping {
		t.Errorf("server.grpc.keepalive.min-time-between-pings = %v, above the ingester client's ping interval %v", got, ping)
	}
	if !cfg.Server.GRPCServerPingWithoutStreamAllowed {
		t.Error("server.grpc.keepalive.ping-without-stream-allowed = false, but the ingester client pings idle connections")
	}
}
