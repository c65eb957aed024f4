package ingester

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/grafana/dskit/kv"
	"github.com/grafana/dskit/ring"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-obs/vigil/pkg/util/logutil"
)

// newLifecycler registers this ingester in ring key "ingester": ACTIVE with NumTokens
// random tokens as soon as it starts (the ingester has no data to hand over, its WAL
// is replayed before it joins), leaving the ring on shutdown, and removing instances
// that stopped heartbeating long ago (crashed ingesters never leave by themselves).
func newLifecycler(cfg RingConfig, store kv.Client, logger *slog.Logger, reg prometheus.Registerer) (*ring.BasicLifecycler, error) {
	lcCfg := ring.BasicLifecyclerConfig{
		ID:                  cfg.InstanceID,
		Addr:                net.JoinHostPort(cfg.InstanceAddr, strconv.Itoa(cfg.InstancePort)),
		Zone:                cfg.InstanceZone,
		HeartbeatPeriod:     cfg.HeartbeatPeriod,
		HeartbeatTimeout:    cfg.HeartbeatTimeout,
		TokensObservePeriod: 0,
		NumTokens:           cfg.NumTokens,
	}
	gl := logutil.GoKit(logger)
	var delegate ring.BasicLifecyclerDelegate = ring.NewInstanceRegisterDelegate(ring.ACTIVE, cfg.NumTokens)
	delegate = ring.NewLeaveOnStoppingDelegate(delegate, gl)
	if cfg.AutoForgetPeriods > 0 {
		delegate = ring.NewAutoForgetDelegate(cfg.HeartbeatTimeout*time.Duration(cfg.AutoForgetPeriods), delegate, gl)
	}
	lc, err := ring.NewBasicLifecycler(lcCfg, RingName, RingKey, store, delegate, gl, prometheus.WrapRegistererWithPrefix("vigil_", reg))
	if err != nil {
		return nil, fmt.Errorf("create ingester ring lifecycler: %w", err)
	}
	return lc, nil
}
