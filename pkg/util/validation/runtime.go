package validation

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/grafana/dskit/runtimeconfig"
	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-obs/vigil/pkg/util/logutil"
)

// OverridesManager keeps per-tenant Overrides in sync with the runtime
// configuration file (`-runtime-config.file`, reloaded every
// `-runtime-config.reload-period` without a restart).
//
// Register the file flags with runtimeconfig.Config.RegisterFlags; the lead
// wires one OverridesManager and hands its Overrides to every component.
type OverridesManager struct {
	services.Service

	overrides *Overrides
	mgr       *runtimeconfig.Manager
}

// NewOverridesManager builds the manager. With no runtime file configured it
// is an idle service and every tenant gets the defaults.
func NewOverridesManager(cfg runtimeconfig.Config, defaults Limits, reg prometheus.Registerer, logger *slog.Logger) (*OverridesManager, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if len(cfg.LoadPath) == 0 {
		o, err := NewOverrides(defaults, nil)
		if err != nil {
			return nil, err
		}
		return &OverridesManager{Service: services.NewIdleService(nil, nil), overrides: o}, nil
	}

	cfg.Loader = func(r io.Reader) (interface{}, error) {
		return ParseRuntimeOverrides(r, defaults)
	}
	mgr, err := runtimeconfig.New(cfg, "overrides", reg, logutil.GoKit(logger))
	if err != nil {
		return nil, fmt.Errorf("create runtime config manager: %w", err)
	}
	om := &OverridesManager{mgr: mgr}
	o, err := NewOverrides(defaults, runtimeTenantLimits{mgr: mgr})
	if err != nil {
		return nil, err
	}
	om.overrides = o
	// Delegate the lifecycle to the runtime config manager, so that a broken
	// file fails start-up (its first load happens in its starting phase).
	om.Service = services.NewBasicService(
		func(ctx context.Context) error {
			if err := services.StartAndAwaitRunning(ctx, mgr); err != nil {
				return fmt.Errorf("load runtime config %v: %w", []string(cfg.LoadPath), err)
			}
			return nil
		},
		func(ctx context.Context) error {
			// The manager only terminates on its own when it fails.
			if err := mgr.AwaitTerminated(ctx); err != nil && ctx.Err() == nil {
				return fmt.Errorf("runtime config manager failed: %w", err)
			}
			return nil
		},
		func(error) error {
			return services.StopAndAwaitTerminated(context.Background(), mgr)
		},
	)
	return om, nil
}

// Overrides returns the live per-tenant limits.
func (m *OverridesManager) Overrides() *Overrides { return m.overrides }

// runtimeTenantLimits reads the most recently loaded runtime config, so that a
// reload takes effect on the next accessor call without any locking here (the
// manager swaps the config atomically).
type runtimeTenantLimits struct {
	mgr *runtimeconfig.Manager
}

func (r runtimeTenantLimits) ByTenant(tenant string) *Limits {
	cfg, _ := r.mgr.GetConfig().(*RuntimeOverrides)
	return cfg.ByTenant(tenant)
}
