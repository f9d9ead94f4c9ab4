package store

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"
)

// The IRC bridge's archive: each user's own copy of the messages of the
// channels that keep their history, by channel key (see RekeyIRCServer).

// IRCMessage is an archived channel message.
type IRCMessage struct {
	ID                    int64 // given by ArchiveIRCMessage, increasing
	User, Server, Channel string
	Nick, Body            string
	Stamp                 time.Time // kept to the millisecond
}

// ArchiveIRCMessage adds m to the archive (m.ID is not used) and returns
// its id.
func (s *Store) ArchiveIRCMessage(ctx context.Context, m IRCMessage) (int64, error) {
	var id int64
	err := s.inGroup(ctx, func(g groupTx) error {
		return g.queryRow([]any{&id}, `INSERT INTO irc_history (jid, server, channel, nick, body, stamp) VALUES (?, ?, ?, ?, ?, ?) RETURNING id`,
			m.User, m.Server, m.Channel, m.Nick, m.Body, m.Stamp.UnixMilli())
	})
	if err != nil {
		return 0, fmt.Errorf("failed to archive an irc message: %w", err)
	}
	return id, nil
}

// IRCArchiveQuery selects messages of one user's archive of one channel.
type IRCArchiveQuery struct {
	User, Server, Channel string
	Start, End            *time.Time // stamps from Start and up to End; nil: no bound
	After, Before         *int64     // ids above After and below Before; nil: no bound
	Nick                  string     // only this nick's messages (ASCII letters in any case); empty: anyone's
	Last                  bool       // the last Max messages selected rather than the first
	Max                   int
}

// QueryIRCArchive returns the first (or, with q.Last, the last) q.Max
// messages q selects, oldest first, and whether q selects more beyond
// them (after them, or with q.Last before them).
func (s *Store) QueryIRCArchive(ctx context.Context, q IRCArchiveQuery) ([]IRCMessage, bool, error) {
	where := []string{"jid = ?", "server = ?", "channel = ?"}
	args := []any{q.User, q.Server, q.Channel}
	add := func(cond string, arg any) { where, args = append(where, cond), append(args, arg) }
	if q.Start != nil {
		add("stamp >= ?", q.Start.UnixMilli())
	}
	if q.End != nil {
		add("stamp <= ?", q.End.UnixMilli())
	}
	if q.After != nil {
		add("id > ?", *q.After)
	}
	if q.Before != nil {
		add("id < ?", *q.Before)
	}
	if q.Nick != "" {
		add(s.equalFoldASCII("nick"), q.Nick)
	}
	q.Max = max(q.Max, 0)
	order := "ASC"
	if q.Last {
		order = "DESC"
	}
	limit := q.Max
	if limit < math.MaxInt {
		limit++ // one more tells whether there are more
	}
	rows, err := s.db.QueryContext(ctx, `SELECT id, nick, body, stamp FROM irc_history WHERE `+strings.Join(where, " AND ")+
		` ORDER BY id `+order+` LIMIT ?`, append(args, limit)...)
	if err != nil {
		return nil, false, fmt.Errorf("failed to query the irc archive: %w", err)
	}
	defer rows.Close()
	var msgs []IRCMessage
	for rows.Next() {
		m := IRCMessage{User: q.User, Server: q.Server, Channel: q.Channel}
		var stamp int64
		if err := rows.Scan(&m.ID, &m.Nick, &m.Body, &stamp); err != nil {
			return nil, false, fmt.Errorf("failed to read the irc archive: %w", err)
		}
		m.Stamp = time.UnixMilli(stamp)
		msgs = append(msgs, m)
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("failed to read the irc archive: %w", err)
	}
	more := len(msgs) > q.Max
	if more {
		msgs = msgs[:q.Max]
	}
	if q.Last {
		for i, j := 0, len(msgs)-1; i < j; i, j = i+1, j-1 {
			msgs[i], msgs[j] = msgs[j], msgs[i]
		}
	}
	return msgs, more, nil
}

// PruneIRCArchive deletes, in every user's archive of every channel, the
// oldest messages beyond the newest keep, in one statement. It returns
// how many it deleted.
func (s *Store) PruneIRCArchive(ctx context.Context, keep int) (int64, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM irc_history WHERE id IN (SELECT id FROM (
		SELECT id, ROW_NUMBER() OVER (PARTITION BY jid, server, channel ORDER BY id DESC) AS newer FROM irc_history) AS h WHERE newer > ?)`, keep)
	if err != nil {
		return 0, fmt.Errorf("failed to prune the irc archive: %w", err)
	}
	n, _ := res.RowsAffected() // the driver always knows
	return n, nil
}
