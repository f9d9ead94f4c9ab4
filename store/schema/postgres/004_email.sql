-- PostgreSQL: version 4: email bridge. IMAP position per user mailbox, so new mail is
-- forwarded once, with no gaps, across restarts.
CREATE TABLE imap_state (
	domain      TEXT    NOT NULL,
	jid         TEXT    NOT NULL,
	mailbox     TEXT    NOT NULL,
	uidvalidity BIGINT  NOT NULL,
	last_uid    BIGINT  NOT NULL,
	PRIMARY KEY (domain, jid, mailbox)
);
