package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"time"
)

// STSPolicy is the strict transport security policy (IRCv3 sts) an IRC
// server announced on a verified TLS connection: until Expires, the
// gateway connects to Host only with TLS, first on Port, never in plain
// text.
type STSPolicy struct {
	Host     string
	Port     int
	Duration time.Duration // as last announced
	Expires  time.Time
}

// MaxSTSDuration bounds a policy's duration, so that its expiry stays a
// time the store can hold.
const MaxSTSDuration = math.MaxInt32 * time.Second

// PutSTSPolicy stores host's policy, announced at t on port, replacing
// the one it had: it expires at t plus d. A duration of 0 removes it.
func (s *Store) PutSTSPolicy(ctx context.Context, host string, port int, d time.Duration, t time.Time) error {
	if d <= 0 {
		if _, err := s.db.ExecContext(ctx, `DELETE FROM irc_sts WHERE host = ?`, host); err != nil {
			return fmt.Errorf("failed to remove the strict transport security policy of %s: %w", host, err)
		}
		return nil
	}
	secs := int64(min(d, MaxSTSDuration) / time.Second)
	_, err := s.db.ExecContext(ctx,
		`INSERT INTO irc_sts (host, port, duration, expires) VALUES (?, ?, ?, ?)
		 ON CONFLICT (host) DO UPDATE SET port = excluded.port, duration = excluded.duration, expires = excluded.expires`,
		host, port, secs, t.Unix()+secs)
	if err != nil {
		return fmt.Errorf("failed to store the strict transport security policy of %s: %w", host, err)
	}
	return nil
}

// RescheduleSTSPolicy moves the expiry of host's policy to t plus its
// duration (a connection that saw the policy closed at t).
func (s *Store) RescheduleSTSPolicy(ctx context.Context, host string, t time.Time) error {
	_, err := s.db.ExecContext(ctx, `UPDATE irc_sts SET expires = ? + duration WHERE host = ? AND expires < ? + duration`,
		t.Unix(), host, t.Unix())
	if err != nil {
		return fmt.Errorf("failed to reschedule the strict transport security policy of %s: %w", host, err)
	}
	return nil
}

// STSPolicyAt returns host's policy in force at t, or nil.
func (s *Store) STSPolicyAt(ctx context.Context, host string, t time.Time) (*STSPolicy, error) {
	var port int
	var secs, expires int64
	err := s.db.QueryRowContext(ctx, `SELECT port, duration, expires FROM irc_sts WHERE host = ? AND expires > ?`,
		host, t.Unix()).Scan(&port, &secs, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("failed to read the strict transport security policy of %s: %w", host, err)
	}
	return &STSPolicy{Host: host, Port: port, Duration: time.Duration(secs) * time.Second, Expires: time.Unix(expires, 0)}, nil
}
