-- Version 1: registrations, claimed foreign addresses, the identity map and
-- the queue of stanzas waiting for the XMPP server.
CREATE TABLE registrations (
	domain  TEXT    NOT NULL,            -- component domain (one per bridge)
	jid     TEXT    NOT NULL,            -- bare JID of the local user
	fields  TEXT    NOT NULL,            -- JSON object: form field var -> value
	created INTEGER NOT NULL,            -- unix seconds
	updated INTEGER NOT NULL,
	PRIMARY KEY (domain, jid)
);

-- A foreign address owned by one registration (a hosted mailbox, an SMS
-- number). The primary key makes a second claim a conflict.
CREATE TABLE claims (
	domain TEXT NOT NULL,
	value  TEXT NOT NULL,
	jid    TEXT NOT NULL,
	PRIMARY KEY (domain, value),
	FOREIGN KEY (domain, jid) REFERENCES registrations (domain, jid) ON DELETE CASCADE
);

-- The foreign spelling of an identity whose JID localpart the XMPP server
-- folds (case, compatibility characters).
CREATE TABLE identities (
	domain  TEXT NOT NULL,
	local   TEXT NOT NULL,               -- localpart as the server delivers it
	foreign_id TEXT NOT NULL,            -- the original foreign identity
	PRIMARY KEY (domain, local)
);

-- Stanzas for the XMPP server, kept until written to the component stream.
CREATE TABLE outbox (
	id      INTEGER PRIMARY KEY AUTOINCREMENT,
	domain  TEXT    NOT NULL,
	stanza  TEXT    NOT NULL,
	created INTEGER NOT NULL
);
CREATE INDEX outbox_domain ON outbox (domain, id);
