package bridges

import (
	"math/rand/v2"
	"time"
)

// Backoff is a retry policy: the wait before the retry that follows
// attempt failures in a row (0 for the first failure) is First, doubling
// with each failure up to Max, less up to Jitter (a fraction of it) at
// random, so that what failed together does not retry together. Every
// reconnection and retry in the gateway uses one.
type Backoff struct {
	First, Max time.Duration
	Jitter     float64
}

// Delay is the wait before the retry after attempt failures in a row.
func (b Backoff) Delay(attempt int) time.Duration {
	d := b.First
	for i := 0; i < attempt && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	if j := int64(float64(d) * b.Jitter); j > 0 {
		d -= time.Duration(rand.Int64N(j + 1))
	}
	return d
}

// FirstRetry is the wait before the first retry of a queued delivery.
const FirstRetry = 5 * time.Second

// RetryBackoff is the policy of queued deliveries (mail, texts, the
// outbox's store): FirstRetry doubling up to max
// (PASSERELLE_RETRY_MAX_DELAY), less up to 20 %.
func RetryBackoff(max time.Duration) Backoff {
	return Backoff{First: FirstRetry, Max: max, Jitter: 0.2}
}
