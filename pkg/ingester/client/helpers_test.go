package client

import "github.com/grafana/dskit/ring"

func ringDesc(addr string) ring.InstanceDesc { return ring.InstanceDesc{Addr: addr} }
