package bridges

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"passerelle/store"
)

// memJobs is a JobStore in memory that can be made to refuse reads and
// writes.
type memJobs struct {
	mu                             sync.Mutex
	jobs                           map[int64]*store.Job
	next                           int64
	refuseDelete                   bool
	refuseUpdate                   bool
	refuseRead                     bool
	readsRefused                   int
	deletesRefused, updatesRefused int
	deleteCtxErr                   error // ctx.Err() of the last DeleteJob
	// claim, when set, makes DueJobs claim what it returns as PostgreSQL
	// does: the stored next try moves that far ahead, the job comes back
	// with the one it had.
	claim time.Duration
	// stopIn, when set, is called by the method of that name ("DueJobs",
	// "RetryJob", "DelayJob", "DeleteJob") as it starts: the gateway stops while the
	// store works. Like a database, the store then refuses what ctx no
	// longer allows, except a claim already made, which a cancelled read
	// does not undo.
	stopIn map[string]func()
}

// stopping calls the stopIn hook of method, the store's lock held.
func (m *memJobs) stopping(method string) {
	if f := m.stopIn[method]; f != nil {
		f()
	}
}

var errRefused = errors.New("refused")

func newMemJobs() *memJobs { return &memJobs{jobs: map[int64]*store.Job{}} }

func (m *memJobs) add(kind string, created time.Time) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.next++
	m.jobs[m.next] = &store.Job{ID: m.next, Domain: "d", JID: "u@example.org", Kind: kind, NextTry: time.Now(), Created: created}
	return m.next
}

func (m *memJobs) get(id int64) (store.Job, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	j, ok := m.jobs[id]
	if !ok {
		return store.Job{}, false
	}
	return *j, true
}

func (m *memJobs) set(f func(m *memJobs)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f(m)
}

func (m *memJobs) DueJobs(ctx context.Context, domain string, now time.Time, limit int) ([]store.Job, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.refuseRead {
		m.readsRefused++
		return nil, errRefused
	}
	m.stopping("DueJobs")
	var out []store.Job
	for id := int64(1); id <= m.next && len(out) < limit; id++ {
		if j, ok := m.jobs[id]; ok && !j.NextTry.After(now) {
			out = append(out, *j)
			if m.claim > 0 {
				j.NextTry = now.Add(m.claim)
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err // claimed all the same
	}
	return out, nil
}

func (m *memJobs) NextJobTime(ctx context.Context, domain string) (time.Time, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.refuseRead {
		return time.Time{}, false, errRefused
	}
	var t time.Time
	for _, j := range m.jobs {
		if t.IsZero() || j.NextTry.Before(t) {
			t = j.NextTry
		}
	}
	return t, !t.IsZero(), nil
}

func (m *memJobs) RetryJob(ctx context.Context, id int64, next time.Time, lastErr string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stopping("RetryJob")
	if err := ctx.Err(); err != nil {
		return err
	}
	if m.refuseUpdate {
		m.updatesRefused++
		return errRefused
	}
	if j, ok := m.jobs[id]; ok {
		j.Attempts++
		j.NextTry, j.LastError = next, lastErr
	}
	return nil
}

func (m *memJobs) DelayJob(ctx context.Context, id int64, next time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stopping("DelayJob")
	if err := ctx.Err(); err != nil {
		return err
	}
	if m.refuseUpdate {
		m.updatesRefused++
		return errRefused
	}
	if j, ok := m.jobs[id]; ok {
		j.NextTry = next
	}
	return nil
}

func (m *memJobs) DeleteJob(ctx context.Context, id int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stopping("DeleteJob")
	m.deleteCtxErr = ctx.Err()
	if err := ctx.Err(); err != nil {
		return err
	}
	if m.refuseDelete {
		m.deletesRefused++
		return errRefused
	}
	delete(m.jobs, id)
	return nil
}

// testRunner returns a runner of kind "k" on st with a 20 ms backoff.
func testRunner(st JobStore, run func(context.Context, Job) Outcome) *Runner {
	return newRunner(st, "d", "k", slog.New(slog.NewTextHandler(io.Discard, nil)),
		Backoff{First: 20 * time.Millisecond, Max: 20 * time.Millisecond}, run)
}

// serve runs r until the test ends.
func serve(t *testing.T, r *Runner) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// waitFor waits until cond holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting: " + what)
		}
	}
}

// waitRefusedRemovals waits until the store has refused n removals: the
// runner went over the job n times.
func (m *memJobs) waitRefusedRemovals(t *testing.T, n int) {
	t.Helper()
	waitFor(t, "refused removals", func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.deletesRefused >= n
	})
}

func gone(st *memJobs, id int64) bool { _, ok := st.get(id); return !ok }

// A job the foreign side took while the gateway was stopping is recorded
// as done: its job is removed, then what follows (a receipt), in a
// context the stop does not cancel.
func TestRunnerDoneWhileStopping(t *testing.T) {
	st := newMemJobs()
	id := st.add("k", time.Now())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var then error = errors.New("not called")
	r := testRunner(st, func(context.Context, Job) Outcome {
		cancel() // the gateway stops while the foreign side answers
		return Done().Then(func(ctx context.Context) {
			then = ctx.Err()
			if !gone(st, id) {
				then = errors.New("called before the removal")
			}
		})
	})
	j, _ := st.get(id)
	r.Do(ctx, j)
	if !gone(st, id) || st.deleteCtxErr != nil {
		t.Fatalf("job left after a delivery during the stop (removal ctx: %v)", st.deleteCtxErr)
	}
	if then != nil {
		t.Fatalf("what follows the removal: %v", then)
	}
}

// A try cut off by the stop leaves the job as it was, whatever the
// bridge made of it.
func TestRunnerCutOffByStop(t *testing.T) {
	for name, o := range map[string]Outcome{"retry": Retry(context.Canceled), "failed": Failed(context.Canceled, func(context.Context) error {
		t.Error("reported a try cut off by the stop")
		return nil
	}), "untouched": {}} {
		st := newMemJobs()
		id := st.add("k", time.Now())
		ctx, cancel := context.WithCancel(context.Background())
		r := testRunner(st, func(context.Context, Job) Outcome { cancel(); return o })
		j, _ := st.get(id)
		r.Do(ctx, j)
		if got, ok := st.get(id); !ok || got.Attempts != 0 || got.LastError != "" {
			t.Errorf("%s: job after a try cut off by the stop: %+v %v", name, got, ok)
		}
	}
}

// A job claimed for a lease (PostgreSQL) and cut off by the stop is put
// back as it was, due at once after a restart rather than at the end of
// the lease; so is one read in the same batch and not run.
func TestRunnerStopReleasesClaims(t *testing.T) {
	st := newMemJobs()
	st.claim = time.Hour
	before := map[int64]time.Time{}
	for range 2 {
		id := st.add("k", time.Now())
		j, _ := st.get(id)
		before[id] = j.NextTry
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := testRunner(st, func(context.Context, Job) Outcome { cancel(); return Retry(context.Canceled) })
	r.Run(ctx)
	for id, next := range before {
		got, ok := st.get(id)
		if !ok || !got.NextTry.Equal(next) || got.Attempts != 0 {
			t.Errorf("job %d after the stop: %+v %v, want due at %v as before", id, got, ok, next)
		}
	}
}

// When the store will not remove a job the foreign side took, the job is
// not run again: its removal is tried again until it works.
func TestRunnerDoneButNotRemoved(t *testing.T) {
	st := newMemJobs()
	st.refuseDelete = true
	var runs atomic.Int32
	r := testRunner(st, func(context.Context, Job) Outcome { runs.Add(1); return Done() })
	id := st.add("k", time.Now())
	serve(t, r)
	st.waitRefusedRemovals(t, 3)
	if n := runs.Load(); n != 1 {
		t.Fatalf("ran %d times while the store kept the job", n)
	}
	st.set(func(m *memJobs) { m.refuseDelete = false })
	waitFor(t, "the removal", func() bool { return gone(st, id) })
	if n := runs.Load(); n != 1 {
		t.Fatalf("ran %d times", n)
	}
}

// When the store will not remove a job once its failure was reported,
// the failure is not reported again.
func TestRunnerReportedButNotRemoved(t *testing.T) {
	st := newMemJobs()
	st.refuseDelete = true
	var reports atomic.Int32
	r := testRunner(st, func(context.Context, Job) Outcome {
		return Failed(errors.New("refused"), func(context.Context) error { reports.Add(1); return nil })
	})
	id := st.add("k", time.Now())
	serve(t, r)
	st.waitRefusedRemovals(t, 3)
	if n := reports.Load(); n != 1 {
		t.Fatalf("reported %d times", n)
	}
	st.set(func(m *memJobs) { m.refuseDelete = false })
	waitFor(t, "the removal", func() bool { return gone(st, id) })
}

// When the store will not reschedule a job that failed, the runner backs
// off instead of running it again at once, over and over.
func TestRunnerRescheduleRefusedBacksOff(t *testing.T) {
	st := newMemJobs()
	st.refuseUpdate = true
	var runs atomic.Int32
	r := testRunner(st, func(context.Context, Job) Outcome { runs.Add(1); return Retry(errors.New("busy")) })
	st.add("k", time.Now())
	serve(t, r)
	time.Sleep(300 * time.Millisecond)
	// The backoff is 20 ms: about 15 tries; a runner that does not wait
	// makes thousands.
	if n := runs.Load(); n == 0 || n > 100 {
		t.Fatalf("%d tries in 300 ms", n)
	}
}

// A failed job whose report cannot be committed stays queued, with one
// more attempt and a later try; once reported, it and the jobs finished
// with it are removed.
func TestRunnerReportFails(t *testing.T) {
	st := newMemJobs()
	id, other, kept := st.add("k", time.Now()), st.add("k", time.Now()), st.add("k", time.Now())
	reportErr := errors.New("outbox unavailable")
	r := testRunner(st, func(context.Context, Job) Outcome {
		return Failed(errors.New("refused"), func(context.Context) error { return reportErr }).With(other)
	})
	j, _ := st.get(id)
	if r.Do(context.Background(), j) {
		t.Fatal("other jobs removed although the report failed")
	}
	got, ok := st.get(id)
	if !ok || got.Attempts != 1 || got.LastError != reportErr.Error() || !got.NextTry.After(time.Now()) || gone(st, other) {
		t.Fatalf("after a failed report: %+v %v", got, ok)
	}
	reportErr = nil
	if !r.Do(context.Background(), got) {
		t.Fatal("the other job's removal is not reported")
	}
	if !gone(st, id) || !gone(st, other) || gone(st, kept) {
		t.Fatal("wrong jobs removed")
	}
}

// A job is final once it was queued MaxQueueAge ago; a retry counts an
// attempt and follows the backoff; Later moves a job without an attempt.
func TestRunnerRetryAndFinal(t *testing.T) {
	st := newMemJobs()
	young, old := st.add("k", time.Now().Add(-time.Hour)), st.add("k", time.Now().Add(-MaxQueueAge-time.Minute))
	final := map[int64]bool{}
	r := testRunner(st, func(_ context.Context, j Job) Outcome {
		final[j.ID] = j.Final
		return Retry(errors.New("busy"))
	})
	for _, id := range []int64{young, old} {
		j, _ := st.get(id)
		r.Do(context.Background(), j)
	}
	if final[young] || !final[old] {
		t.Fatalf("final: %v", final)
	}
	if j, _ := st.get(young); j.Attempts != 1 || j.LastError != "busy" || !j.NextTry.After(time.Now()) {
		t.Fatalf("after a retry: %+v", j)
	}
	// A bridge that still retries a final job (it should fail it): the
	// job is kept, not lost.
	if j, ok := st.get(old); !ok || j.Attempts != 1 {
		t.Fatalf("a final job retried: %+v %v", j, ok)
	}
	at := time.Now().Add(time.Hour)
	r = testRunner(st, func(context.Context, Job) Outcome { return Later(at) })
	j, _ := st.get(young)
	r.Do(context.Background(), j)
	if j, _ := st.get(young); j.Attempts != 1 || !j.NextTry.Equal(at) {
		t.Fatalf("after Later: %+v", j)
	}
}

// A due job of another kind is not run, not lost, and does not hold up
// the others.
func TestRunnerOtherKind(t *testing.T) {
	st := newMemJobs()
	foreign := st.add("other", time.Now())
	var ran []int64
	var mu sync.Mutex
	r := testRunner(st, func(_ context.Context, j Job) Outcome {
		mu.Lock()
		ran = append(ran, j.ID)
		mu.Unlock()
		return Done()
	})
	serve(t, r)
	mine := st.add("k", time.Now())
	r.Wake()
	waitFor(t, "the job of the runner's kind", func() bool { return gone(st, mine) })
	mu.Lock()
	defer mu.Unlock()
	j, ok := st.get(foreign)
	if !ok || len(ran) != 1 || ran[0] != mine || j.NextTry.Before(time.Now().Add(MaxQueueAge-time.Hour)) {
		t.Fatalf("ran %v; the other job: %+v %v", ran, j, ok)
	}
}

// Run returns only once the job it was running is recorded.
func TestRunnerStopRecords(t *testing.T) {
	st := newMemJobs()
	running, release := make(chan struct{}), make(chan struct{})
	r := testRunner(st, func(context.Context, Job) Outcome {
		close(running)
		<-release // a foreign side slow to answer, even to a cancelled request
		return Done()
	})
	id := st.add("k", time.Now())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	<-running
	cancel()
	select {
	case <-done:
		t.Fatal("Run returned while a job was running")
	default:
	}
	close(release)
	<-done
	if !gone(st, id) {
		t.Fatal("the job taken during the stop was not recorded")
	}
}

// While the store cannot be read, the runner tries again after the
// backoff's first delay; once it can, the due jobs run.
func TestRunnerQueueUnreadable(t *testing.T) {
	st := newMemJobs()
	st.refuseRead = true
	r := testRunner(st, func(context.Context, Job) Outcome { return Done() })
	id := st.add("k", time.Now())
	serve(t, r)
	waitFor(t, "three refused reads", func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return st.readsRefused >= 3
	})
	st.set(func(m *memJobs) { m.refuseRead = false })
	waitFor(t, "the job", func() bool { return gone(st, id) })
}

// A stop that comes while the runner claims jobs (PostgreSQL) or records
// what became of one (a retry, a delay, a failure reported, a removal)
// does not leave the job claimed for its lease: after a restart it is
// due as it would have been without the stop.
func TestRunnerStopDuringRecords(t *testing.T) {
	retry := func(func()) Outcome { return Retry(errors.New("provider answered 500")) }
	later := time.Now().Add(3 * time.Hour)
	cases := []struct {
		name, kind string
		// stopIn makes the hooks of st that stop the gateway (cancel).
		stopIn func(st *memJobs, cancel func()) map[string]func()
		run    func(cancel func()) Outcome
		// due is when the job is due after the stop (zero: gone); the
		// claim is an hour.
		due   time.Duration
		tries int // tries recorded (-1: as many as runs)
	}{
		{name: "DueJobs", kind: "k", run: retry, tries: -1,
			stopIn: func(_ *memJobs, cancel func()) map[string]func() { return map[string]func(){"DueJobs": cancel} }},
		{name: "RetryJob", kind: "k", run: retry, tries: 1,
			stopIn: func(_ *memJobs, cancel func()) map[string]func() { return map[string]func(){"RetryJob": cancel} }},
		// A job of another kind, put aside.
		{name: "DelayJob other kind", kind: "other", due: MaxQueueAge,
			stopIn: func(_ *memJobs, cancel func()) map[string]func() { return map[string]func(){"DelayJob": cancel} }},
		{name: "DelayJob Later", kind: "k", due: 3 * time.Hour, run: func(func()) Outcome { return Later(later) },
			stopIn: func(_ *memJobs, cancel func()) map[string]func() { return map[string]func(){"DelayJob": cancel} }},
		// The stop comes as the failure is reported, and as the job is
		// removed.
		{name: "Failed report", kind: "k", run: func(cancel func()) Outcome {
			return Failed(errors.New("no such number"), func(context.Context) error { cancel(); return nil })
		}, stopIn: func(*memJobs, func()) map[string]func() { return nil }},
		{name: "Failed DeleteJob", kind: "k", run: func(func()) Outcome {
			return Failed(errors.New("no such number"), func(context.Context) error { return nil })
		}, stopIn: func(_ *memJobs, cancel func()) map[string]func() { return map[string]func(){"DeleteJob": cancel} }},
		// A job done whose removal the store refused is removed on a
		// later pass, which claimed it again: the stop comes then.
		{name: "DeleteJob finished", kind: "k", run: func(func()) Outcome { return Done() },
			stopIn: func(st *memJobs, cancel func()) map[string]func() {
				st.claim, st.refuseDelete = 0, true
				deletes := 0
				return map[string]func(){"DeleteJob": func() {
					deletes++
					if deletes == 1 {
						st.claim = time.Hour // refused; the next read claims it
						return
					}
					st.refuseDelete = false
					cancel()
				}}
			}},
	}
	for _, c := range cases {
		st := newMemJobs()
		st.claim = time.Hour
		id := st.add(c.kind, time.Now())
		ctx, cancel := context.WithCancel(context.Background())
		st.stopIn = c.stopIn(st, cancel)
		tries := 0
		r := testRunner(st, func(context.Context, Job) Outcome { tries++; return c.run(cancel) })
		start := time.Now()
		r.Run(ctx)
		cancel()
		got, ok := st.get(id)
		if c.due == 0 && c.tries == 0 {
			if ok {
				t.Errorf("stop in %s: the job is left: %+v", c.name, got)
			}
			continue
		}
		if !ok {
			t.Fatalf("stop in %s: the job is gone", c.name)
		}
		want := c.tries
		if want < 0 {
			want = tries
		}
		// Due when recorded, or at once (not run: put back as it
		// was); not after the claim.
		if due := got.NextTry.Sub(start); due < c.due-time.Minute || due > c.due+time.Minute || got.Attempts != want {
			t.Errorf("stop in %s: %d tries, job %+v due in %v, want %v", c.name, tries, got, due, c.due)
		}
		if c.name == "RetryJob" && (tries != 1 || got.LastError != "provider answered 500") {
			t.Errorf("stop in %s: %d tries, the retry not recorded: %+v", c.name, tries, got)
		}
	}
}
