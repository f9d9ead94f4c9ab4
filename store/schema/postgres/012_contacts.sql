-- PostgreSQL: version 12: the foreign contacts a bridge put in (or offered to) a user's
-- roster (XEP-0356), so that renames are respected and unregistering
-- removes exactly the items the gateway added.
CREATE TABLE contacts (
	domain  TEXT    NOT NULL,            -- component domain
	jid     TEXT    NOT NULL,            -- bare JID of the local user
	contact TEXT    NOT NULL,            -- bare JID of the contact at domain
	name    TEXT    NOT NULL,            -- the name the gateway gave it
	grp     TEXT    NOT NULL,            -- the roster group the gateway gave it
	state   TEXT    NOT NULL,            -- added, asked, found (see store.ContactState)
	renamed BIGINT  NOT NULL DEFAULT 0,  -- 1: the user gave it another name
	created BIGINT  NOT NULL,            -- unix seconds
	updated BIGINT  NOT NULL,
	PRIMARY KEY (domain, jid, contact)
);
