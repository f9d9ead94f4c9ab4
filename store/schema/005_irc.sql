-- Version 5: IRC bridge. Per-user network settings (ad-hoc configure),
-- per-user channel settings, and the history archive.
CREATE TABLE irc_networks (
	jid      TEXT NOT NULL,
	server   TEXT NOT NULL,
	settings TEXT NOT NULL,                  -- JSON: ports, tls_ports, verify_cert, nick, ...
	PRIMARY KEY (jid, server)
);

CREATE TABLE irc_channels (
	jid            TEXT    NOT NULL,
	server         TEXT    NOT NULL,
	channel        TEXT    NOT NULL,
	persistent     INTEGER NOT NULL DEFAULT 0,
	record_history INTEGER NOT NULL DEFAULT 1,
	nick           TEXT    NOT NULL DEFAULT '',  -- the nick of the last join, for rejoining after a restart
	PRIMARY KEY (jid, server, channel)
);

CREATE TABLE irc_history (
	id      INTEGER PRIMARY KEY AUTOINCREMENT,
	jid     TEXT    NOT NULL,
	server  TEXT    NOT NULL,
	channel TEXT    NOT NULL,
	nick    TEXT    NOT NULL,
	body    TEXT    NOT NULL,
	kind    TEXT    NOT NULL DEFAULT 'message', -- message, action, notice, subject
	stamp   INTEGER NOT NULL                    -- unix milliseconds
);
CREATE INDEX irc_history_channel ON irc_history (jid, server, channel, stamp);
CREATE INDEX irc_history_channel_id ON irc_history (jid, server, channel, id); -- paging and pruning by id
