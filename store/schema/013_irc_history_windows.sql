-- Version 13: a channel's line is archived once per server (irc_history
-- rows with jid = ''), not once per bridged user. Each user sees the lines
-- archived while they were in the channel: their windows, from the line
-- after after_id up to until_id (NULL: still in it). The rows written
-- before (one per user, jid set) stay that user's own, visible to them
-- alone as before, and go with the archive's retention.
CREATE TABLE irc_history_windows (
	id       INTEGER PRIMARY KEY AUTOINCREMENT,
	jid      TEXT    NOT NULL,
	server   TEXT    NOT NULL,
	channel  TEXT    NOT NULL,  -- channel key, as irc_history.channel
	after_id INTEGER NOT NULL,  -- the last irc_history id before the user joined
	until_id INTEGER            -- the last irc_history id before the user left; NULL: in the channel
);
CREATE INDEX irc_history_windows_user ON irc_history_windows (jid, server, channel, after_id);
