-- Version 15: a channel's line archived once across the instances sharing
-- a PostgreSQL database (store.ArchiveIRCLine). Each channel line row
-- (jid = '') names the line archived before it in its channel, prev_id
-- (the channel's newest when it was written), and a line has at most one
-- successor: of two instances writing the same line, after the same
-- one, the second finds the first's row. lines are the IRC lines a
-- user's own message was sent as, when it took several (or they differ
-- from its body), separated by newlines; NULL: one line, the body.
-- SQLite has one process: its rows leave both columns NULL.
ALTER TABLE irc_history ADD COLUMN prev_id BIGINT;
ALTER TABLE irc_history ADD COLUMN lines TEXT;
CREATE UNIQUE INDEX irc_history_next ON irc_history (server, channel, prev_id) WHERE prev_id IS NOT NULL;
