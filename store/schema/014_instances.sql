-- Version 14: instances sharing the database (PostgreSQL; an SQLite
-- database has one process, which uses none of this but the column).
--
-- An instance is live while its row is here: it renews expires (unix
-- milliseconds) before it passes; a stopped instance deletes its row, and
-- any instance deletes the rows that expired, and those of processes gone
-- from the node it runs on (a restart after a kill takes over at once).
CREATE TABLE instances (
	id      TEXT    PRIMARY KEY,        -- host, process and a random part
	node    TEXT    NOT NULL DEFAULT '', -- the kernel and process namespace it runs in ('': unknown)
	pid     INTEGER NOT NULL DEFAULT 0,  -- its process id there
	started INTEGER NOT NULL,           -- unix milliseconds
	expires INTEGER NOT NULL            -- unix milliseconds
);

-- Which instance holds a user's foreign connections (IRC, mailbox
-- watchers) on a bridge: held while that instance is live.
CREATE TABLE user_leases (
	domain   TEXT    NOT NULL,           -- component domain
	jid      TEXT    NOT NULL,           -- bare JID of the local user
	instance TEXT    NOT NULL,           -- the holder
	wanted   TEXT    NOT NULL DEFAULT '', -- an instance the user's stanzas reach now, waiting for the holder to let go
	handed   INTEGER NOT NULL DEFAULT 0, -- 1: handed over to instance, which has not taken the user up yet
	PRIMARY KEY (domain, jid)
);
CREATE INDEX user_leases_instance ON user_leases (instance, domain);

-- The instance whose stream sends a queued stanza: the one that wrote it,
-- or the one that adopted it when its writer stopped ('' on SQLite).
ALTER TABLE outbox ADD COLUMN owner TEXT NOT NULL DEFAULT '';
