package distributor

import (
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// rateLimiters holds one token bucket per tenant. Limits are re-read on every
// request, so a runtime-config change applies to the next request.
type rateLimiters struct {
	mu sync.Mutex
	m  map[string]*rate.Limiter
}

func newRateLimiters() *rateLimiters {
	return &rateLimiters{m: map[string]*rate.Limiter{}}
}

// reserve takes n tokens for tenant. It returns false and how long to wait
// when the bucket does not hold enough; nothing is taken in that case. A
// limit of 0 disables rate limiting.
func (r *rateLimiters) reserve(tenant string, limit float64, burst, n int, now time.Time) (bool, time.Duration) {
	if limit <= 0 {
		return true, 0
	}
	r.mu.Lock()
	l, ok := r.m[tenant]
	if !ok {
		l = rate.NewLimiter(rate.Limit(limit), burst)
		r.m[tenant] = l
	}
	r.mu.Unlock()
	if l.Limit() != rate.Limit(limit) {
		l.SetLimitAt(now, rate.Limit(limit))
	}
	if l.Burst() != burst {
		l.SetBurstAt(now, burst)
	}

	res := l.ReserveN(now, n)
	if !res.OK() {
		// n exceeds the burst: no wait makes it fit. Suggest the time to
		// refill a full bucket so well-behaved clients back off.
		return false, time.Duration(math.Ceil(float64(burst)/limit)) * time.Second
	}
	delay := res.DelayFrom(now)
	if delay == 0 {
		return true, 0
	}
	res.CancelAt(now)
	return false, delay
}
