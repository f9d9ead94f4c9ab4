-- Version 2: per-user settings, the outbound job queue of the bridges and the
-- message-id map.
CREATE TABLE settings (
	domain TEXT NOT NULL,
	jid    TEXT NOT NULL,
	key    TEXT NOT NULL,
	value  TEXT NOT NULL,
	PRIMARY KEY (domain, jid, key)
);

-- Deliveries to a foreign network (mail, texts), retried with backoff until
-- they succeed or fail for good.
CREATE TABLE jobs (
	id         INTEGER PRIMARY KEY AUTOINCREMENT,
	domain     TEXT    NOT NULL,
	jid        TEXT    NOT NULL,         -- the local user on whose behalf
	kind       TEXT    NOT NULL,
	payload    BLOB    NOT NULL,
	attempts   INTEGER NOT NULL DEFAULT 0,
	next_try   INTEGER NOT NULL,         -- unix milliseconds
	last_error TEXT    NOT NULL DEFAULT '',
	created    INTEGER NOT NULL
);
CREATE INDEX jobs_due ON jobs (domain, next_try);

-- XMPP message ids <-> foreign message ids (Message-ID, SMS SID, IRC msgid).
CREATE TABLE message_ids (
	domain     TEXT    NOT NULL,
	jid        TEXT    NOT NULL,
	xmpp_id    TEXT    NOT NULL,
	foreign_id TEXT    NOT NULL,
	peer       TEXT    NOT NULL DEFAULT '',   -- the foreign peer's localpart
	thread     TEXT    NOT NULL DEFAULT '',
	extra      TEXT    NOT NULL DEFAULT '',   -- bridge-specific (e.g. subject)
	created    INTEGER NOT NULL,
	PRIMARY KEY (domain, jid, xmpp_id)
);
CREATE INDEX message_ids_foreign ON message_ids (domain, foreign_id);
