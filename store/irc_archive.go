package store

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// The IRC bridge's archive of the channels that keep their history, by
// channel key (see RekeyIRCServer): each line once per server (User ""),
// seen by each user through their windows (the spans of lines archived
// while they were in the channel: OpenIRCWindow, CloseIRCWindow). Rows
// archived for one user (User set; all rows before schema version 13)
// are that user's alone.

// IRCMessage is an archived channel message.
type IRCMessage struct {
	ID                    int64 // given by ArchiveIRCMessage, increasing
	User, Server, Channel string
	Nick, Body            string
	Stamp                 time.Time // kept to the millisecond
}

// ArchiveIRCMessage adds m to the archive (m.ID is not used) and returns
// its id: with m.User "", the channel's line, seen by the users whose
// window it falls in; with m.User set, that user's alone.
func (s *Store) ArchiveIRCMessage(ctx context.Context, m IRCMessage) (int64, error) {
	var id int64
	err := s.inGroup(ctx, func(g groupTx) error {
		return g.queryRow([]any{&id}, insertIRCMessage, m.User, m.Server, m.Channel, m.Nick, m.Body, m.Stamp.UnixMilli())
	})
	if err != nil {
		return 0, fmt.Errorf("failed to archive an irc message: %w", err)
	}
	return id, nil
}

const insertIRCMessage = `INSERT INTO irc_history (jid, server, channel, nick, body, stamp) VALUES (?, ?, ?, ?, ?, ?) RETURNING id`

// IRCLine is a channel line to archive (ArchiveIRCLine): a line from IRC,
// or a user's own message.
type IRCLine struct {
	Server, Channel, Nick, Body string
	Stamp                       time.Time // kept to the millisecond
	// Lines are the IRC lines a user's own message is sent as (the text
	// of each, as the others receive it); nil: one line, Body.
	Lines []string
	// After is the id of the channel's line this instance archived or
	// found last (0: none), and Since the oldest stamp of a line another
	// instance archived that may be this one.
	After int64
	Since time.Time
	// Joined is the channel's newest line when the first of this
	// instance's connections now in the channel joined it (from
	// OpenIRCWindow; 0: none known): no line up to it was sent to this
	// instance, so none is this one (after a restart, After is 0).
	Joined int64
	// Echo, when not nil, is queued with the line: see IRCEcho.
	Echo *IRCEcho
}

// IRCEcho is stanzas that name a channel line by its archive id (their
// stanza-id): the copies of the line to a user's resources (the room's
// echo of their own message, or a line from IRC). ArchiveIRCLine queues them in Domain's outbox in the
// transaction that writes the line, with its id: the line is not
// archived without them, nor are they queued without it. Each stanza is
// given as its text before the id and its text after it.
type IRCEcho struct {
	Domain  string
	Stanzas [][2]string
}

// ArchivedLine is where ArchiveIRCLine put a line: its id, and when that
// is a message another instance archived, sent as several IRC lines,
// those lines (the first is the one given; the caller's other copies of
// the next ones are the same message).
type ArchivedLine struct {
	ID    int64
	Lines []string
	// Queued reports whether the line's echo (IRCLine.Echo) was queued:
	// always, but when the line is one another instance archived
	// (PostgreSQL), found rather than written; then the caller queues it,
	// with ID.
	Queued bool
}

// ArchiveIRCLine archives a channel line once for all the instances that
// share the database, and returns its id. The instances whose users are
// in a channel each get its lines, in the order the IRC server sends
// them; each archives them in that order, naming the channel's newest
// line as the one before (irc_history.prev_id, unique). So on PostgreSQL
// a line is written when l.After is still the channel's newest, in one
// statement of a commit group; otherwise, another instance wrote a line
// since: the line is the first one after l.After (and not older than
// l.Since) with the same nick and first IRC line, if any, else it is
// written after the newest, and looked for again when another instance
// got there first. A line said twice is two lines: the second copy is
// looked for after the first. On SQLite (one process) it is written.
// l.Echo is queued in the transaction that writes the line (see
// ArchivedLine.Queued).
func (s *Store) ArchiveIRCLine(ctx context.Context, l IRCLine) (ArchivedLine, error) {
	if !s.pg {
		if l.Echo != nil {
			return s.archiveEcho(ctx, l)
		}
		id, err := s.ArchiveIRCMessage(ctx, IRCMessage{Server: l.Server, Channel: l.Channel, Nick: l.Nick, Body: l.Body, Stamp: l.Stamp})
		return ArchivedLine{ID: id}, err
	}
	return s.shareIRCLine(ctx, l)
}

// archiveEcho is ArchiveIRCLine on SQLite for a line with an echo.
func (s *Store) archiveEcho(ctx context.Context, l IRCLine) (ArchivedLine, error) {
	var id int64
	err := s.inGroup(ctx, func(g groupTx) error {
		if err := g.queryRow([]any{&id}, insertIRCMessage, "", l.Server, l.Channel, l.Nick, l.Body, l.Stamp.UnixMilli()); err != nil {
			return err
		}
		sid, created := strconv.FormatInt(id, 10), now()
		for _, st := range l.Echo.Stanzas {
			if err := g.exec(insertOutbox, l.Echo.Domain, st[0]+sid+st[1], created); err != nil {
				return fmt.Errorf("failed to queue stanzas: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return ArchivedLine{}, fmt.Errorf("failed to archive an irc message: %w", err)
	}
	return ArchivedLine{ID: id, Queued: true}, nil
}

// shareIRCLine is ArchiveIRCLine on PostgreSQL (apart, so that SQLite's
// way does not pay for l's move to the heap).
func (s *Store) shareIRCLine(ctx context.Context, l IRCLine) (ArchivedLine, error) {
	var lines any // NULL: one line, the body
	if len(l.Lines) > 1 || (len(l.Lines) == 1 && l.Lines[0] != l.Body) {
		lines = strings.Join(l.Lines, "\n")
	}
	var id int64
	err := s.inGroup(ctx, func(g groupTx) error {
		if l.Echo != nil {
			return writeEcho(g, l, l.After, lines, &id)
		}
		return g.queryRow([]any{&id}, pgArchiveAfter, l.Server, l.Channel, l.Nick, l.Body, l.Stamp.UnixMilli(), l.After, lines)
	})
	if err != nil {
		return ArchivedLine{}, fmt.Errorf("failed to archive an irc message: %w", err)
	}
	if id != 0 {
		return ArchivedLine{ID: id, Queued: l.Echo != nil}, nil
	}
	a, err := s.archiveLater(ctx, l, lines)
	if err != nil {
		return ArchivedLine{}, fmt.Errorf("failed to archive an irc message: %w", err)
	}
	return a, nil
}

// pgArchiveAfter writes a channel line ($1 server, $2 channel, $3 nick,
// $4 body, $5 stamp, $7 lines) after the line $6, if that is still the
// channel's newest and no other instance writes one after it at the same
// time, and returns its id; else 0.
const pgArchiveAfter = `WITH ins AS (` + pgInsertAfter + `)
	SELECT coalesce((SELECT id FROM ins), 0)`

const pgInsertAfter = `INSERT INTO irc_history (jid, server, channel, nick, body, stamp, prev_id, lines)
	SELECT '', $1::text, $2::text, $3::text, $4::text, $5::bigint, $6::bigint, $7::text
	WHERE NOT EXISTS (SELECT 1 FROM irc_history WHERE jid = '' AND server = $1 AND channel = $2 AND id > $6)
	ON CONFLICT (server, channel, prev_id) WHERE prev_id IS NOT NULL DO NOTHING RETURNING id`

// pgArchiveEcho is pgArchiveAfter that, when it writes the line, queues
// its echo in the same statement ($8 the domain, $9 created, $10 the
// owner, $11 and $12 the text of each stanza before and after the id):
// the line's id comes back only once the group is committed (see
// sendGroup).
const pgArchiveEcho = `WITH ins AS (` + pgInsertAfter + `), o AS (
	INSERT INTO outbox (domain, stanza, created, owner)
	SELECT $8::text, e.head || ins.id::text || e.tail, $9::bigint, $10::text
	FROM ins, unnest($11::text[], $12::text[]) WITH ORDINALITY AS e(head, tail, n) ORDER BY e.n)
	SELECT coalesce((SELECT id FROM ins), 0)`

// writeEcho queues in g the write of l after the line after, with its
// echo (pgArchiveEcho); id gets the line's id, 0 when not written.
func writeEcho(g groupTx, l IRCLine, after int64, lines any, id *int64) error {
	heads, tails := make([]string, len(l.Echo.Stanzas)), make([]string, len(l.Echo.Stanzas))
	for i, st := range l.Echo.Stanzas {
		heads[i], tails[i] = st[0], st[1]
	}
	return g.queryRow([]any{id}, pgArchiveEcho, l.Server, l.Channel, l.Nick, l.Body, l.Stamp.UnixMilli(), after, lines,
		l.Echo.Domain, now(), g.owner, heads, tails)
}

// archiveLater is ArchiveIRCLine's way when another instance wrote a line
// of the channel after l.After (PostgreSQL).
func (s *Store) archiveLater(ctx context.Context, l IRCLine, lines any) (ArchivedLine, error) {
	first := l.Body
	if len(l.Lines) > 0 {
		first = l.Lines[0]
	}
	for from := l.After; ; {
		if archiveRace != nil {
			archiveRace("look")
		}
		newest, found, err := s.findIRCLine(ctx, l, first, from)
		if err != nil || found.ID != 0 {
			return found, err
		}
		if archiveRace != nil {
			archiveRace("write")
		}
		var id int64
		if l.Echo != nil {
			// In a group: the outbox's rows are written there (see
			// PendingStanzasAfter).
			err = s.inGroup(ctx, func(g groupTx) error { return writeEcho(g, l, newest, lines, &id) })
		} else {
			err = s.db.QueryRowContext(ctx, pgArchiveAfter, l.Server, l.Channel, l.Nick, l.Body, l.Stamp.UnixMilli(), newest, lines).Scan(&id)
		}
		if err != nil {
			return ArchivedLine{}, err
		}
		if id != 0 {
			return ArchivedLine{ID: id, Queued: l.Echo != nil}, nil
		}
		from = newest // another line came: is it this one?
	}
}

// archiveRace, when set (by tests), runs before archiveLater's look for
// a line ("look") and before its write ("write").
var archiveRace func(step string)

// findIRCLine looks among the channel lines after from (not older than
// l.Since, and after l.Joined) for the first one l may be, by its nick and its first IRC
// line, and returns it (ID 0: none) and the channel's newest line.
func (s *Store) findIRCLine(ctx context.Context, l IRCLine, first string, from int64) (int64, ArchivedLine, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, nick, body, lines, stamp FROM irc_history
		WHERE jid = '' AND server = ? AND channel = ? AND id > ? AND (stamp >= ?
			OR id = (SELECT max(id) FROM irc_history WHERE jid = '' AND server = ? AND channel = ?))
		ORDER BY id`, l.Server, l.Channel, from, l.Since.UnixMilli(), l.Server, l.Channel)
	if err != nil {
		return 0, ArchivedLine{}, err
	}
	defer rows.Close()
	newest := from
	for rows.Next() {
		var (
			id         int64
			nick, body string
			lines      sql.NullString
			stamp      int64
		)
		if err := rows.Scan(&id, &nick, &body, &lines, &stamp); err != nil {
			return 0, ArchivedLine{}, err
		}
		newest = id
		sent := []string{body}
		if lines.Valid {
			sent = strings.Split(lines.String, "\n")
		}
		if nick == l.Nick && sent[0] == first && stamp >= l.Since.UnixMilli() && id > l.Joined {
			a := ArchivedLine{ID: id}
			if len(sent) > 1 {
				a.Lines = sent
			}
			return newest, a, nil
		}
	}
	return newest, ArchivedLine{}, rows.Err()
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
	where := []string{visibleLine, "server = ?", "channel = ?"}
	args := []any{q.User, q.User, q.Server, q.Channel}
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

// visibleLine selects the rows of irc_history one user (given twice)
// sees: their own, and the channel's lines within one of their windows.
const visibleLine = `(jid = ? OR (jid = '' AND EXISTS (SELECT 1 FROM irc_history_windows w
	WHERE w.jid = ? AND w.server = irc_history.server AND w.channel = irc_history.channel
	AND irc_history.id > w.after_id AND (w.until_id IS NULL OR irc_history.id <= w.until_id))))`

// lastLine is the id of the newest line archived: a window opened now
// starts after it, one closed now ends with it. Ids only grow.
const lastLine = `(SELECT coalesce(max(id), 0) FROM irc_history)`

// OpenIRCWindow starts user's window on channel (a key) of server: the
// lines archived from now on are theirs to see, until CloseIRCWindow. A
// window already open stays as it is (on PostgreSQL, one another instance
// opened: CloseIRCWindows leaves it open). It returns the id of the
// channel's newest line now, at the connection's join (0: none; see
// IRCLine.Joined): not the start of a window opened before, which may be
// older than lines this connection never got.
func (s *Store) OpenIRCWindow(ctx context.Context, user, server, channel string) (int64, error) {
	var after int64
	err := s.inGroup(ctx, func(g groupTx) error {
		if err := g.exec(`INSERT INTO irc_history_windows (jid, server, channel, after_id)
			SELECT ?, ?, ?, `+lastLine+` WHERE NOT EXISTS (SELECT 1 FROM irc_history_windows
			WHERE jid = ? AND server = ? AND channel = ? AND until_id IS NULL)`,
			user, server, channel, user, server, channel); err != nil {
			return err
		}
		return g.queryRow([]any{&after}, `SELECT coalesce(max(id), 0) FROM irc_history
			WHERE jid = '' AND server = ? AND channel = ?`, server, channel)
	})
	if err != nil {
		return 0, fmt.Errorf("failed to open an irc archive window: %w", err)
	}
	return after, nil
}

// CloseIRCWindow ends user's open window on channel of server, if any:
// the lines archived from now on are not theirs.
func (s *Store) CloseIRCWindow(ctx context.Context, user, server, channel string) error {
	err := s.inGroup(ctx, func(g groupTx) error {
		return g.exec(`UPDATE irc_history_windows SET until_id = `+lastLine+`
			WHERE jid = ? AND server = ? AND channel = ? AND until_id IS NULL`, user, server, channel)
	})
	if err != nil {
		return fmt.Errorf("failed to close an irc archive window: %w", err)
	}
	return nil
}

// CloseIRCWindows ends the open windows of the users of domain (the IRC
// bridge's) that no other live instance holds: at a start, none of them
// is in a channel yet (the lines of a stopped gateway's last moments were
// archived before it stopped). On PostgreSQL, the windows of the users
// another instance holds (see ClaimUser) are theirs and stay open.
func (s *Store) CloseIRCWindows(ctx context.Context, domain string) error {
	var err error
	if s.pg {
		_, err = s.db.ExecContext(ctx, `UPDATE irc_history_windows SET until_id = `+lastLine+` WHERE until_id IS NULL
			AND jid NOT IN (SELECT jid FROM user_leases WHERE domain = ? AND instance <> ? AND instance IN (SELECT id FROM instances))`,
			domain, s.Instance())
	} else {
		_, err = s.db.ExecContext(ctx, `UPDATE irc_history_windows SET until_id = `+lastLine+` WHERE until_id IS NULL`)
	}
	if err != nil {
		return fmt.Errorf("failed to close the irc archive windows: %w", err)
	}
	return nil
}

// PruneIRCArchive deletes, in every channel's archive (and each user's
// own rows), the oldest messages beyond the newest keep, in one statement,
// then the closed windows that no longer hold an archived line. It
// returns how many messages it deleted.
func (s *Store) PruneIRCArchive(ctx context.Context, keep int) (int64, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM irc_history WHERE id IN (SELECT id FROM (
		SELECT id, ROW_NUMBER() OVER (PARTITION BY jid, server, channel ORDER BY id DESC) AS newer FROM irc_history) AS h WHERE newer > ?)`, keep)
	if err != nil {
		return 0, fmt.Errorf("failed to prune the irc archive: %w", err)
	}
	n, _ := res.RowsAffected() // the driver always knows
	if _, err := s.db.ExecContext(ctx, `DELETE FROM irc_history_windows WHERE until_id IS NOT NULL
		AND NOT EXISTS (SELECT 1 FROM irc_history h WHERE h.jid = '' AND h.server = irc_history_windows.server
			AND h.channel = irc_history_windows.channel AND h.id > irc_history_windows.after_id AND h.id <= irc_history_windows.until_id)`); err != nil {
		return n, fmt.Errorf("failed to prune the irc archive windows: %w", err)
	}
	return n, nil
}
