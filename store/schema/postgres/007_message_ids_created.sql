-- PostgreSQL: version 7: links between XMPP and foreign message ids are kept for a
-- limited time (PruneMessageIDs); the index finds the old ones.
CREATE INDEX message_ids_created ON message_ids (created);
