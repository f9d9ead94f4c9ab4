package bridges

import (
	"context"
	"math/rand/v2"
	"time"

	"passerelle/store"
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

// RecordContext returns the context in which to record a delivery the
// foreign side has already taken (removing its job, keeping its id). It
// is not cancelled with ctx: a stop between the delivery and its record
// would deliver it again after the restart. It lasts at most 10 s; the
// bridge's Wait keeps the store open meanwhile.
func RecordContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
}

// FinishedJobs are the queued jobs a worker is done with (delivered, or
// failed and reported) that the store would not remove. While the store
// keeps them due, the worker must not run them again (a second delivery,
// a second report): it calls Remove instead, until that works. The zero
// value is ready; it belongs to the worker's goroutine.
type FinishedJobs struct{ ids map[int64]bool }

// Has reports whether job id is finished but not yet removed.
func (f *FinishedJobs) Has(id int64) bool { return f.ids[id] }

// Remove deletes job id from st. When the store refuses, the job is kept
// as finished and the store's error returned.
func (f *FinishedJobs) Remove(ctx context.Context, st *store.Store, id int64) error {
	if err := st.DeleteJob(ctx, id); err != nil {
		if f.ids == nil {
			f.ids = map[int64]bool{}
		}
		f.ids[id] = true
		return err
	}
	delete(f.ids, id)
	return nil
}
