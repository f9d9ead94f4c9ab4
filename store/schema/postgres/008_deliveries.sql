-- PostgreSQL: version 8: an event that a foreign network may deliver more than once (an
-- inbound text, a delivery report) is recorded under a key unique in its
-- domain, in the transaction that queues the stanzas it gives and their
-- message-id links (Deliver): a second delivery of the event, even at the
-- same moment, finds the key and queues nothing.
CREATE TABLE deliveries (
	domain  TEXT    NOT NULL,
	key     TEXT    NOT NULL,            -- e.g. an inbound text's MessageSid
	created BIGINT  NOT NULL,            -- unix seconds; pruned with the links
	rowid   BIGSERIAL,                   -- SQLite's rowid: PruneMessageIDs deletes by it
	PRIMARY KEY (domain, key)
);
CREATE INDEX deliveries_created ON deliveries (created);

-- The inbound texts taken before: their links (extra '{"in":true}', the
-- foreign id their MessageSid) stand for their keys.
INSERT INTO deliveries (domain, key, created)
	SELECT domain, foreign_id, created FROM message_ids WHERE extra = '{"in":true}'
	ON CONFLICT DO NOTHING;
