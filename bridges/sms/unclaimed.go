package sms

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// keepUnclaimed stores an inbound text for a gateway number nobody has
// claimed (table sms_unclaimed), so that it is not lost.
func (b *Bridge) keepUnclaimed(ctx context.Context, in *Inbound) error {
	media, err := json.Marshal(in.Media)
	if err != nil {
		return err
	}
	if in.Media == nil {
		media = []byte("[]")
	}
	_, err = b.host.Store().DB().ExecContext(ctx, `INSERT INTO sms_unclaimed (to_number, from_number, body, media, sid, received)
		VALUES (?, ?, ?, ?, ?, ?)`, in.To, in.From, in.Body, string(media), in.SID, time.Now().Unix())
	if err != nil {
		return fmt.Errorf("failed to keep a text for an unclaimed number: %w", err)
	}
	return nil
}

// earlyStatusTTL is how long a report for an unknown SID is kept.
const earlyStatusTTL = 7 * 24 * time.Hour

// keepEarlyStatus stores a delivery report for a SID not known yet.
func (b *Bridge) keepEarlyStatus(ctx context.Context, s *Status) error {
	db := b.host.Store().DB()
	now := time.Now()
	if _, err := db.ExecContext(ctx, `DELETE FROM sms_early_status WHERE received < ?`, now.Add(-earlyStatusTTL).Unix()); err != nil {
		return err
	}
	_, err := db.ExecContext(ctx, `INSERT INTO sms_early_status (sid, status, error_code, error_message, received)
		VALUES (?, ?, ?, ?, ?) ON CONFLICT (sid) DO UPDATE SET status = excluded.status,
		error_code = excluded.error_code, error_message = excluded.error_message`,
		s.SID, s.Status, s.ErrorCode, s.ErrorMessage, now.Unix())
	return err
}

// takeEarlyStatus returns (and forgets) the report kept for sid, or nil.
func (b *Bridge) takeEarlyStatus(ctx context.Context, sid string) (*Status, error) {
	s := &Status{SID: sid}
	err := b.host.Store().DB().QueryRowContext(ctx, `DELETE FROM sms_early_status WHERE sid = ?
		RETURNING status, error_code, error_message`, sid).Scan(&s.Status, &s.ErrorCode, &s.ErrorMessage)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return s, nil
}
