package ingester

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync/atomic"
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
//
// share is kept up to date with the ring the lifecycler reads (see ringShare).
func newLifecycler(cfg RingConfig, store kv.Client, share *ringShare, logger *slog.Logger, reg prometheus.Registerer) (*ring.BasicLifecycler, error) {
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
	delegate = ringShareDelegate{BasicLifecyclerDelegate: delegate, share: share}
	lc, err := ring.NewBasicLifecycler(lcCfg, RingName, RingKey, store, delegate, gl, prometheus.WrapRegistererWithPrefix("vigil_", reg))
	if err != nil {
		return nil, fmt.Errorf("create ingester ring lifecycler: %w", err)
	}
	return lc, nil
}

// ringShare is this ingester's view of how many ingesters share the tenant-wide ("global")
// series limits. Every series is stored by replication-factor ingesters, so if series spread
// evenly each of N healthy ingesters holds global × RF ÷ N of a tenant's series; enforcing
// the full global value on every ingester would allow N ÷ RF times the configured limit.
//
// The share is recomputed when the lifecycler registers and on every heartbeat
// (-ingester.ring.heartbeat-period), from the ring the lifecycler has just read, so series
// creation only loads a pointer. Without a ring (single-process tests) nothing is observed
// and the full global limit applies, as it does with RF 1 and one ingester.
type ringShare struct {
	replicationFactor int
	zoneAware         bool
	heartbeatTimeout  time.Duration
	logger            *slog.Logger

	cur atomic.Pointer[limitShare]
}

// limitShare is an immutable snapshot of the ring as far as limits are concerned: this
// ingester enforces global × replicas ÷ ingesters.
type limitShare struct {
	replicas, ingesters int
	// healthy counts the healthy ingesters (in this ingester's zone when zones > 1), this
	// one included; zones is the number of zones the share is spread over (1 without
	// zone-aware replication).
	healthy, zones int
}

func newRingShare(cfg RingConfig, logger *slog.Logger) *ringShare {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &ringShare{
		replicationFactor: max(cfg.ReplicationFactor, 1),
		zoneAware:         cfg.ZoneAwarenessEnabled,
		heartbeatTimeout:  cfg.HeartbeatTimeout,
		logger:            logger,
	}
}

// load returns the current share; nil (the whole global limit) before the ring was seen.
func (s *ringShare) load() *limitShare {
	if s == nil {
		return nil
	}
	return s.cur.Load()
}

// observe recomputes the share from desc. It runs in the lifecycler's goroutine.
func (s *ringShare) observe(desc *ring.Desc, selfID, selfZone string, now time.Time) {
	next := computeShare(desc, selfID, selfZone, s.replicationFactor, s.zoneAware, s.heartbeatTimeout, now)
	prev := s.cur.Load()
	if prev != nil && *prev == next {
		return
	}
	s.cur.Store(&next)
	if prev == nil && next.replicas >= next.ingesters {
		return // the whole limit, as without a ring: nothing worth a log line
	}
	s.logger.Info("per-tenant series limits: this ingester enforces its share of the global limits",
		"share", fmt.Sprintf("%d/%d", next.replicas, next.ingesters), "healthy_ingesters", next.healthy, "zones", next.zones,
		"replication_factor", s.replicationFactor)
}

// computeShare counts the ingesters a global limit is spread over.
//
// Without zone-aware replication a series lives on min(RF, N) of the N healthy ingesters:
// share = min(RF, N) ÷ N. Taking min(RF, N) keeps the local limit at the global one while
// fewer ingesters than RF are up (each then holds every series at most once), instead of
// RF times it. With zone-aware replication over Z zones a series lives in min(RF, Z) zones
// and is spread over the Nz healthy ingesters of each: share = min(RF, Z) ÷ (Z × Nz).
//
// Only healthy instances count (heartbeat within the timeout and ACTIVE, as the
// distributor writes to them); unhealthy ones do not receive their share of new series.
// This ingester always counts itself: it is running, whatever its entry says so far.
func computeShare(desc *ring.Desc, selfID, selfZone string, rf int, zoneAware bool, heartbeatTimeout time.Duration, now time.Time) limitShare {
	healthy, healthyInZone := 1, 1
	zones := map[string]struct{}{selfZone: {}}
	if desc != nil {
		for id, inst := range desc.Ingesters {
			if id == selfID {
				continue
			}
			zones[inst.Zone] = struct{}{}
			// A zero timeout disables the heartbeat check, as in the ring client.
			if !ring.Write.IsInstanceInStateHealthy(inst.State) || (heartbeatTimeout > 0 && !inst.IsHeartbeatHealthy(heartbeatTimeout, now)) {
				continue
			}
			healthy++
			if inst.Zone == selfZone {
				healthyInZone++
			}
		}
	}
	rf = max(rf, 1)
	if zoneAware && len(zones) > 1 {
		z := len(zones)
		return limitShare{replicas: min(rf, z), ingesters: z * healthyInZone, healthy: healthyInZone, zones: z}
	}
	return limitShare{replicas: min(rf, healthy), ingesters: healthy, healthy: healthy, zones: 1}
}

// local is this ingester's part of global: global × replicas ÷ ingesters, at least 1.
// 0 (unlimited) stays 0; a nil share is the whole limit.
func (s *limitShare) local(global int) int {
	if global <= 0 || s == nil || s.replicas >= s.ingesters {
		return global
	}
	return max(1, int(int64(global)*int64(s.replicas)/int64(s.ingesters)))
}

// String explains the share in refusal messages.
func (s *limitShare) String() string {
	if s.zones > 1 {
		return fmt.Sprintf("%d healthy ingesters in this ingester's zone, each series in %d of %d zones", s.healthy, s.replicas, s.zones)
	}
	return fmt.Sprintf("%d healthy ingesters in the ring, each series on %d of them", s.healthy, s.replicas)
}

// ringShareDelegate feeds the ring the lifecycler reads to a ringShare and otherwise
// behaves as the delegate it wraps.
type ringShareDelegate struct {
	ring.BasicLifecyclerDelegate
	share *ringShare
}

func (d ringShareDelegate) OnRingInstanceRegister(l *ring.BasicLifecycler, desc ring.Desc, exists bool, id string, inst ring.InstanceDesc) (ring.InstanceState, ring.Tokens) {
	d.share.observe(&desc, id, l.GetInstanceZone(), time.Now())
	return d.BasicLifecyclerDelegate.OnRingInstanceRegister(l, desc, exists, id, inst)
}

func (d ringShareDelegate) OnRingInstanceHeartbeat(l *ring.BasicLifecycler, desc *ring.Desc, inst *ring.InstanceDesc) {
	// After the wrapped delegate, which may forget instances that stopped heartbeating.
	d.BasicLifecyclerDelegate.OnRingInstanceHeartbeat(l, desc, inst)
	d.share.observe(desc, l.GetInstanceID(), l.GetInstanceZone(), time.Now())
}
