package bridges

import (
	"context"
	"log/slog"
	"time"

	"passerelle/store"
)

// JobStore is the queue of deliveries to foreign networks, as the runner
// needs it. *store.Store implements it. A store shared by several
// instances claims the jobs DueJobs returns (a lease), so that each runs
// in one instance at a time.
type JobStore interface {
	// DueJobs returns up to limit jobs of domain due at now, soonest first.
	DueJobs(ctx context.Context, domain string, now time.Time, limit int) ([]store.Job, error)
	// NextJobTime returns when the next job of domain is due (ok false: none).
	NextJobTime(ctx context.Context, domain string) (t time.Time, ok bool, err error)
	// RetryJob counts a failed attempt and moves the next try to next.
	RetryJob(ctx context.Context, id int64, next time.Time, lastErr string) error
	// DelayJob moves the next try to next, counting no attempt.
	DelayJob(ctx context.Context, id int64, next time.Time) error
	// DeleteJob removes a job the runner is done with.
	DeleteJob(ctx context.Context, id int64) error
}

// Job is a queued delivery, as a runner hands it to its bridge.
type Job struct {
	store.Job
	// Final is set once the job was queued MaxQueueAge ago: a temporary
	// failure now fails it for good, and the bridge returns Failed with a
	// report saying it could not be delivered for MaxQueueAgeText.
	Final bool
}

// Outcome is what became of a job a bridge ran. The zero Outcome leaves
// the job as it was (a try cut off by the gateway's stop).
type Outcome struct {
	state  outcomeState
	err    error
	at     time.Time
	report func(ctx context.Context) error
	then   func(ctx context.Context)
	also   []int64
}

type outcomeState int

const (
	untouched outcomeState = iota
	done
	retry
	later
	failed
)

// Done is a job the foreign side took. The runner removes it even when
// the gateway is stopping meanwhile (RecordContext).
func Done() Outcome { return Outcome{state: done} }

// Retry is a job that failed temporarily with err: it is tried again
// after the runner's backoff.
func Retry(err error) Outcome { return Outcome{state: retry, err: err} }

// Later is a job that waits, without a failure, until t.
func Later(t time.Time) Outcome { return Outcome{state: later, at: t} }

// Failed is a job that failed for good with err: the runner calls report
// (which tells the sender) and removes the job; when report fails, the
// job is tried, and reported, again after the backoff.
func Failed(err error, report func(ctx context.Context) error) Outcome {
	return Outcome{state: failed, err: err, report: report}
}

// Then adds what to do once a Done job is removed (a delivery receipt),
// in the same context as the removal.
func (o Outcome) Then(f func(ctx context.Context)) Outcome {
	o.then = f
	return o
}

// With adds the jobs finished along with this one (the later parts of a
// message that failed): the runner removes them too.
func (o Outcome) With(ids ...int64) Outcome {
	o.also = append(o.also, ids...)
	return o
}

// runBatch is the most jobs read from the store at once.
const runBatch = 50

// Runner runs the queued jobs of one bridge, one at a time, soonest first,
// until its context ends. It wakes when Wake is called and when the next
// job is due; it owns claiming, the backoff, the MaxQueueAge limit and the
// recording of each outcome. Its bridge gives the job kind and the
// function that runs one job.
//
// When the store refuses to record an outcome (a job it will not remove
// or reschedule), the job stays due: the runner then waits, backing off,
// before it reads the queue again rather than spin, and a job it is done
// with (delivered, or failed and reported) is never run again while the
// gateway runs; its removal is tried again.
type Runner struct {
	store   JobStore
	domain  string
	kind    string
	log     *slog.Logger
	backoff Backoff
	run     func(ctx context.Context, j Job) Outcome
	wake    chan struct{}

	// The goroutine's own state.
	finished map[int64]bool // done with, but the store would not remove them
	stuck    bool           // the store refused to record an outcome in this pass
}

// NewRunner returns the runner of host's jobs of kind, run by run, with
// the retry backoff capped by host.RetryMaxDelay.
func NewRunner(host Host, kind string, run func(ctx context.Context, j Job) Outcome) *Runner {
	return newRunner(host.Store(), host.Domain(), kind, host.Log(), RetryBackoff(host.RetryMaxDelay()), run)
}

func newRunner(st JobStore, domain, kind string, log *slog.Logger, b Backoff, run func(context.Context, Job) Outcome) *Runner {
	return &Runner{store: st, domain: domain, kind: kind, log: log.With("jobs", kind), backoff: b, run: run,
		wake: make(chan struct{}, 1), finished: map[int64]bool{}}
}

// Wake makes the runner look for due jobs now (a job was queued). A nil
// Runner (a bridge not started) has nothing to wake.
func (r *Runner) Wake() {
	if r == nil {
		return
	}
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run runs due jobs until ctx ends; it returns once the job being run is
// recorded.
func (r *Runner) Run(ctx context.Context) {
	stuckPasses := 0
	for {
		r.drain(ctx)
		wait := time.Hour
		if r.stuck {
			wait = r.backoff.Delay(stuckPasses)
			stuckPasses++
		} else {
			stuckPasses = 0
			if next, ok, err := r.store.NextJobTime(ctx, r.domain); err == nil && ok {
				wait = max(time.Until(next), 0)
			} else if err != nil && ctx.Err() == nil {
				r.log.Error("cannot read the queue", "err", err)
				wait = r.backoff.First
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-r.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// drain runs the due jobs until none is left, or the store refuses to
// record an outcome.
func (r *Runner) drain(ctx context.Context) {
	r.stuck = false
	for ctx.Err() == nil && !r.stuck {
		jobs, err := r.claim(ctx)
		if err != nil {
			if ctx.Err() == nil {
				r.log.Error("cannot read the queue", "err", err)
			}
			return
		}
		progress := false
		for i, j := range jobs {
			if ctx.Err() != nil || r.stuck {
				r.release(ctx, jobs[i:])
				return
			}
			if r.finished[j.ID] {
				// Claimed again by this read (PostgreSQL): a removal
				// cut off by the stop would leave it so until the end
				// of the lease.
				rctx, cancel := RecordContext(ctx)
				progress = r.remove(rctx, j.ID) || progress
				cancel()
				continue
			}
			progress = true
			if r.Do(ctx, j) {
				break // other jobs of this batch are gone: read the queue again
			}
		}
		if !progress {
			return
		}
	}
}

// claim reads the due jobs. On an engine that claims what it returns
// (PostgreSQL), a read cut off by the stop may have claimed jobs all the
// same, which would then wait for the end of their lease: the read is
// therefore not cancelled by the stop, and drain puts back what it
// returned once it sees the stop.
func (r *Runner) claim(ctx context.Context) ([]store.Job, error) {
	rctx, cancel := RecordContext(ctx)
	defer cancel()
	return r.store.DueJobs(rctx, r.domain, time.Now(), runBatch)
}

// Do runs job j and records its outcome. It reports whether other jobs
// were removed with it.
func (r *Runner) Do(ctx context.Context, j store.Job) (removedOthers bool) {
	if j.Kind != r.kind {
		// Not this bridge's: kept, out of the way, for the operator.
		// Recorded even when the gateway is stopping meanwhile: the
		// job is claimed (PostgreSQL) until then.
		r.log.Error("a queued job of another kind is put aside for a day", "job", j.ID, "kind", j.Kind)
		rctx, cancel := RecordContext(ctx)
		defer cancel()
		r.later(rctx, j.ID, time.Now().Add(MaxQueueAge))
		return false
	}
	o := r.run(ctx, Job{Job: j, Final: time.Since(j.Created) >= MaxQueueAge})
	if o.state != done && ctx.Err() != nil {
		r.release(ctx, []store.Job{j}) // cut off by the stop: the job stays as it was
		return false
	}
	// The outcome is recorded even when the gateway is stopping
	// meanwhile: a delivery the foreign side took must not be made again,
	// and a job claimed for a lease (PostgreSQL) whose retry or delay
	// went unrecorded would wait for the end of the lease after a restart.
	ctx, cancel := RecordContext(ctx)
	defer cancel()
	switch o.state {
	case done:
		for _, id := range append(o.also, j.ID) {
			r.remove(ctx, id)
		}
		if o.then != nil {
			o.then(ctx)
		}
		return len(o.also) > 0
	case retry:
		if !j.Created.IsZero() && time.Since(j.Created) >= MaxQueueAge {
			r.log.Error("a job is still retried after "+MaxQueueAgeText, "job", j.ID, "err", o.err)
		}
		r.retry(ctx, j, o.err)
	case later:
		r.later(ctx, j.ID, o.at)
	case failed:
		if err := o.report(ctx); err != nil {
			r.log.Error("cannot report a failed job; will retry", "job", j.ID, "err", err)
			r.retry(ctx, j, err)
			return false
		}
		for _, id := range append(o.also, j.ID) {
			r.remove(ctx, id)
		}
		return len(o.also) > 0
	}
	return false
}

// release puts back jobs read but not run because of the stop as they
// were: on an engine that claims the jobs it returns (PostgreSQL), DueJobs
// moved their next try to the end of a lease, which the next start would
// otherwise wait for.
func (r *Runner) release(ctx context.Context, jobs []store.Job) {
	ctx, cancel := RecordContext(ctx)
	defer cancel()
	for _, j := range jobs {
		if err := r.store.DelayJob(ctx, j.ID, j.NextTry); err != nil {
			r.log.Warn("cannot put back a job cut off by the stop; it waits for its lease to end", "job", j.ID, "err", err)
		}
	}
}

// retry reschedules j after a failure, with the backoff.
func (r *Runner) retry(ctx context.Context, j store.Job, cause error) {
	next := time.Now().Add(r.backoff.Delay(j.Attempts))
	if err := r.store.RetryJob(ctx, j.ID, next, cause.Error()); err != nil {
		r.log.Error("cannot reschedule a job", "job", j.ID, "err", err)
		r.stuck = true
	}
}

func (r *Runner) later(ctx context.Context, id int64, t time.Time) {
	if err := r.store.DelayJob(ctx, id, t); err != nil {
		r.log.Error("cannot reschedule a job", "job", id, "err", err)
		r.stuck = true
	}
}

// remove takes a job the runner is done with out of the store. When the
// store refuses, the job is not run again and its removal is tried on
// the next pass. It reports whether the job was removed.
func (r *Runner) remove(ctx context.Context, id int64) bool {
	if err := r.store.DeleteJob(ctx, id); err != nil {
		r.log.Error("cannot remove a finished job from the queue", "job", id, "err", err)
		r.finished[id] = true
		r.stuck = true
		return false
	}
	delete(r.finished, id)
	return true
}

// RecordContext returns the context in which to record a delivery the
// foreign side has already taken (removing its job, keeping its id). It
// is not cancelled with ctx: a stop between the delivery and its record
// would deliver it again after the restart. It lasts at most 10 s; the
// bridge's Run returns only after, so the store stays open meanwhile.
func RecordContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
}
