package ebpf

import "github.com/prometheus/client_golang/prometheus"

// collector exports the tracer's state at scrape time: hook attach status,
// in-kernel drop counters and tracking map sizes.
type collector struct {
	t        *Tracer
	attached *prometheus.Desc
	dropped  *prometheus.Desc
	mapSize  *prometheus.Desc
}

func newCollector(t *Tracer) *collector {
	return &collector{
		t: t,
		attached: prometheus.NewDesc("vigil_agent_hook_attached",
			"1 if the eBPF hook is attached, 0 if it failed to load or attach (see the agent log for why).",
			[]string{"hook"}, nil),
		dropped: prometheus.NewDesc("vigil_agent_kernel_events_dropped_total",
			"Events dropped in the kernel because a ring buffer or map was full.",
			[]string{"reason"}, nil),
		mapSize: prometheus.NewDesc("vigil_agent_bpf_map_entries",
			"Entries in the agent's eBPF tracking maps.",
			[]string{"map"}, nil),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.attached
	ch <- c.dropped
	ch <- c.mapSize
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	for _, h := range c.t.hooks {
		v := 0.0
		if h.Err == nil {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(c.attached, prometheus.GaugeValue, v, h.Hook)
	}
	if drops, err := c.t.Drops(); err == nil {
		for reason, n := range drops {
			ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(n), reason)
		}
	}
	for name, n := range c.t.MapSizes() {
		ch <- prometheus.MustNewConstMetric(c.mapSize, prometheus.GaugeValue, float64(n), name)
	}
}
