package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// UnclaimedText is an inbound text for a gateway number nobody has
// claimed, kept so that it is not lost.
type UnclaimedText struct {
	To, From, Body, SID string
	Media               []string
	Received            time.Time
}

// KeepUnclaimedText stores t.
func (s *Store) KeepUnclaimedText(ctx context.Context, t UnclaimedText) error {
	media := []byte("[]")
	if t.Media != nil {
		media, _ = json.Marshal(t.Media) // a []string always encodes
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO sms_unclaimed (to_number, from_number, body, media, sid, received)
		VALUES (?, ?, ?, ?, ?, ?)`, t.To, t.From, t.Body, string(media), t.SID, t.Received.Unix())
	if err != nil {
		return fmt.Errorf("failed to keep a text for an unclaimed number: %w", err)
	}
	return nil
}

// UnclaimedTexts returns the texts kept for the number to, oldest first.
func (s *Store) UnclaimedTexts(ctx context.Context, to string) ([]UnclaimedText, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT to_number, from_number, body, media, sid, received
		FROM sms_unclaimed WHERE to_number = ? ORDER BY id`, to)
	if err != nil {
		return nil, fmt.Errorf("failed to read the texts kept for %s: %w", to, err)
	}
	defer rows.Close()
	var ts []UnclaimedText
	for rows.Next() {
		var t UnclaimedText
		var media string
		var received int64
		if err := rows.Scan(&t.To, &t.From, &t.Body, &media, &t.SID, &received); err != nil {
			return nil, fmt.Errorf("failed to read the texts kept for %s: %w", to, err)
		}
		if err := json.Unmarshal([]byte(media), &t.Media); err != nil {
			return nil, fmt.Errorf("failed to read the media of a text kept for %s: %w", to, err)
		}
		t.Received = time.Unix(received, 0)
		ts = append(ts, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("failed to read the texts kept for %s: %w", to, err)
	}
	return ts, nil
}

// EarlyStatus is a delivery report that came before the provider's answer
// to the send (its text's SID was not known yet).
type EarlyStatus struct {
	SID, Status, ErrorCode, ErrorMessage string
}

// EarlyStatusTTL is how long an early report is kept.
const EarlyStatusTTL = 7 * 24 * time.Hour

// KeepEarlyStatus stores r, received at t, replacing an earlier report for
// its SID, and forgets the reports older than EarlyStatusTTL, in one
// transaction.
func (s *Store) KeepEarlyStatus(ctx context.Context, r EarlyStatus, t time.Time) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("failed to keep an early status report: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `DELETE FROM sms_early_status WHERE received < ?`, t.Add(-EarlyStatusTTL).Unix()); err != nil {
		return fmt.Errorf("failed to forget old early status reports: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO sms_early_status (sid, status, error_code, error_message, received)
		VALUES (?, ?, ?, ?, ?) ON CONFLICT (sid) DO UPDATE SET status = excluded.status,
		error_code = excluded.error_code, error_message = excluded.error_message`,
		r.SID, r.Status, r.ErrorCode, r.ErrorMessage, t.Unix()); err != nil {
		return fmt.Errorf("failed to keep an early status report: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("failed to keep an early status report: %w", err)
	}
	return nil
}

// TakeEarlyStatus returns and forgets the report kept for sid, or
// ErrNotFound.
func (s *Store) TakeEarlyStatus(ctx context.Context, sid string) (*EarlyStatus, error) {
	r := &EarlyStatus{SID: sid}
	err := s.db.QueryRowContext(ctx, `DELETE FROM sms_early_status WHERE sid = ?
		RETURNING status, error_code, error_message`, sid).Scan(&r.Status, &r.ErrorCode, &r.ErrorMessage)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("failed to take an early status report: %w", err)
	}
	return r, nil
}
