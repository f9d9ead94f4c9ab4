package store

import (
	"context"
	"fmt"
	"time"
)

// JobLease is how long a job DueJobs returns on PostgreSQL is claimed by
// the instance that read it: other instances sharing the database skip
// it until the instance records what became of it (RetryJob, DelayJob,
// DeleteJob), or, when the instance died with it, until the lease ends.
const JobLease = 2 * time.Minute

// claimJobs is DueJobs on PostgreSQL: the due job it returns is claimed,
// its next try moved to the end of the lease, in the statement that
// selects it; rows another instance is claiming at that moment are
// skipped (SKIP LOCKED), never waited for. The job comes back with the
// next try it had before the claim, so that a runner cut off by a stop can
// put it back as it was (DelayJob) instead of leaving it to its lease. It
// claims one job a call: a job claimed and not run (the runner stopped, or
// ended a batch early) would wait for the end of its lease.
func (s *Store) claimJobs(ctx context.Context, domain string, t time.Time, limit int) ([]Job, error) {
	if limit < 1 {
		return nil, nil
	}
	jobs, err := s.jobs(ctx, `WITH c AS (
		SELECT id, next_try FROM jobs WHERE domain = ? AND next_try <= ? ORDER BY next_try, id LIMIT 1 FOR UPDATE SKIP LOCKED)
		UPDATE jobs SET next_try = ? FROM c WHERE jobs.id = c.id
		RETURNING jobs.id, jobs.domain, jobs.jid, jobs.kind, jobs.payload, jobs.attempts, c.next_try, jobs.last_error, jobs.created`,
		domain, t.UnixMilli(), t.Add(JobLease).UnixMilli())
	if err != nil {
		return nil, fmt.Errorf("failed to claim a job: %w", err)
	}
	return jobs, nil
}
