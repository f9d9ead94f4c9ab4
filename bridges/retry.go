package bridges

import (
	"math/rand/v2"
	"time"
)

// FirstRetry is the wait before the first retry of a queued delivery.
const FirstRetry = 5 * time.Second

// RetryDelay is the wait before the next try of a queued delivery that has
// failed attempts times (0 for the first failure): FirstRetry doubling with
// each failure, capped by max (PASSERELLE_RETRY_MAX_DELAY), less up to 20 %
// of jitter so that deliveries that failed together do not retry together.
func RetryDelay(attempts int, max time.Duration) time.Duration {
	d := FirstRetry
	for i := 0; i < attempts && d < max; i++ {
		d *= 2
	}
	d = min(d, max)
	return d - time.Duration(rand.Int64N(int64(d/5)+1))
}
