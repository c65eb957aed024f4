package validation

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/grafana/dskit/runtimeconfig"
	"github.com/grafana/dskit/services"
	"github.com/prometheus/client_golang/prometheus"
)

func defaultLimits(t *testing.T) Limits {
	t.Helper()
	var l Limits
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	l.RegisterFlags(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if err := l.Validate(); err != nil {
		t.Fatalf("defaults must be valid: %v", err)
	}
	return l
}

func TestFlagsSetLimits(t *testing.T) {
	var l Limits
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	l.RegisterFlags(fs)
	err := fs.Parse([]string{
		"-" + FlagIngestionRate + "=5",
		"-" + FlagMaxLabelNamesPerSeries + "=7",
		"-" + FlagOutOfOrderTimeWindow + "=30m",
		"-" + FlagMaxSpansPerTrace + "=9",
	})
	if err != nil {
		t.Fatal(err)
	}
	if l.IngestionRate != 5 || l.MaxLabelNamesPerSeries != 7 || l.OutOfOrderTimeWindow != 30*time.Minute || l.MaxSpansPerTrace != 9 {
		t.Fatalf("flags not applied: %+v", l)
	}
}

func TestValidateNamesKey(t *testing.T) {
	l := defaultLimits(t)
	l.MaxLabelValueLength = -1
	err := l.Validate()
	if err == nil || !strings.Contains(err.Error(), "max_label_value_length") {
		t.Fatalf("want error naming max_label_value_length, got %v", err)
	}
}

func TestParseRuntimeOverrides(t *testing.T) {
	defaults := defaultLimits(t)
	doc := `
overrides:
  team-a:
    ingestion_rate: 42
    out_of_order_time_window: 1h
  team-b:
    max_global_series_per_metric: 10
`
	ro, err := ParseRuntimeOverrides(strings.NewReader(doc), defaults)
	if err != nil {
		t.Fatal(err)
	}
	o, err := NewOverrides(defaults, ro)
	if err != nil {
		t.Fatal(err)
	}
	if got := o.IngestionRate("team-a"); got != 42 {
		t.Errorf("team-a ingestion rate = %v, want 42", got)
	}
	if got := o.OutOfOrderTimeWindow("team-a"); got != time.Hour {
		t.Errorf("team-a ooo window = %v, want 1h", got)
	}
	// Keys a tenant does not set keep the defaults.
	if got := o.MaxLabelNamesPerSeries("team-a"); got != defaults.MaxLabelNamesPerSeries {
		t.Errorf("team-a max label names = %v, want default %v", got, defaults.MaxLabelNamesPerSeries)
	}
	if got := o.MaxSeriesPerMetric("team-b"); got != 10 {
		t.Errorf("team-b per-metric = %v, want 10", got)
	}
	if got := o.IngestionRate("team-b"); got != defaults.IngestionRate {
		t.Errorf("team-b ingestion rate = %v, want default", got)
	}
	if got := o.IngestionRate("unknown"); got != defaults.IngestionRate {
		t.Errorf("unknown tenant ingestion rate = %v, want default", got)
	}
}

func TestParseRuntimeOverridesErrors(t *testing.T) {
	defaults := defaultLimits(t)
	for name, tc := range map[string]struct{ doc, want string }{
		"unknown limit": {"overrides:\n  a:\n    ingestion_rat: 1\n", "ingestion_rat"},
		"unknown top":   {"overide: {}\n", "overide"},
		"negative":      {"overrides:\n  a:\n    max_label_name_length: -3\n", "overrides.a: max_label_name_length"},
		"bad duration":  {"overrides:\n  a:\n    past_grace_period: soon\n", "overrides.a"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ParseRuntimeOverrides(strings.NewReader(tc.doc), defaults)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want error containing %q, got %v", tc.want, err)
			}
		})
	}
	if _, err := ParseRuntimeOverrides(strings.NewReader(""), defaults); err != nil {
		t.Fatalf("empty file must be valid: %v", err)
	}
}

func TestOverridesManagerReloadsFile(t *testing.T) {
	defaults := defaultLimits(t)
	path := filepath.Join(t.TempDir(), "runtime.yaml")
	write := func(doc string) {
		t.Helper()
		// Write and rename so the manager never reads a half-written file.
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write("overrides:\n  t1:\n    ingestion_rate: 10\n")

	cfg := runtimeconfig.Config{LoadPath: []string{path}, ReloadPeriod: 20 * time.Millisecond}
	m, err := NewOverridesManager(cfg, defaults, prometheus.NewPedanticRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := services.StartAndAwaitRunning(ctx, m); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = services.StopAndAwaitTerminated(ctx, m) })

	o := m.Overrides()
	if got := o.IngestionRate("t1"); got != 10 {
		t.Fatalf("initial override = %v, want 10", got)
	}

	write("overrides:\n  t1:\n    ingestion_rate: 20\n  t2:\n    max_global_series_per_user: 3\n")
	deadline := time.Now().Add(10 * time.Second)
	for o.IngestionRate("t1") != 20 || o.MaxSeriesPerTenant("t2") != 3 {
		if time.Now().After(deadline) {
			t.Fatalf("override not reloaded: t1 rate=%v t2 series=%v", o.IngestionRate("t1"), o.MaxSeriesPerTenant("t2"))
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not synchronisation
	}
}

func TestOverridesManagerFailsOnBadFile(t *testing.T) {
	defaults := defaultLimits(t)
	path := filepath.Join(t.TempDir(), "runtime.yaml")
	if err := os.WriteFile(path, []byte("overrides:\n  t1:\n    no_such_limit: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := runtimeconfig.Config{LoadPath: []string{path}, ReloadPeriod: time.Minute}
	m, err := NewOverridesManager(cfg, defaults, prometheus.NewPedanticRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	err = services.StartAndAwaitRunning(context.Background(), m)
	if err == nil || !strings.Contains(err.Error(), "no_such_limit") {
		t.Fatalf("want start failure naming no_such_limit, got %v", err)
	}
}

func TestOverridesManagerWithoutFile(t *testing.T) {
	defaults := defaultLimits(t)
	m, err := NewOverridesManager(runtimeconfig.Config{}, defaults, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := services.StartAndAwaitRunning(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	defer services.StopAndAwaitTerminated(context.Background(), m) //nolint:errcheck
	if got := m.Overrides().MaxSeriesPerTenant("x"); got != defaults.MaxGlobalSeriesPerUser {
		t.Fatalf("got %v", got)
	}
}
