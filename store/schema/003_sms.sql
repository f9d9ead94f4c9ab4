-- Version 3: SMS bridge. Inbound texts for a number nobody has claimed are
-- kept here (and logged), never dropped.
CREATE TABLE sms_unclaimed (
	id          INTEGER PRIMARY KEY AUTOINCREMENT,
	to_number   TEXT    NOT NULL,
	from_number TEXT    NOT NULL,
	body        TEXT    NOT NULL,
	media       TEXT    NOT NULL DEFAULT '',   -- JSON array of media URLs
	sid         TEXT    NOT NULL DEFAULT '',
	received    INTEGER NOT NULL
);

-- Delivery reports that arrived before the provider's answer to the send
-- (the text's SID was not known yet); applied once it is.
CREATE TABLE sms_early_status (
	sid           TEXT    PRIMARY KEY,
	status        TEXT    NOT NULL,
	error_code    TEXT    NOT NULL DEFAULT '',
	error_message TEXT    NOT NULL DEFAULT '',
	received      INTEGER NOT NULL
);
