-- PostgreSQL: version 6: IRC keys follow the server's CASEMAPPING. irc_channels.channel
-- and irc_history.channel are the channel name folded with the mapping the
-- server last announced (rfc1459 until it announced one); the channel keeps
-- its spelling, to fold it again when the mapping changes and to rejoin
-- under its own name after a restart.
ALTER TABLE irc_channels ADD COLUMN name TEXT NOT NULL DEFAULT ''; -- the channel as spelled on its last join; empty: rows from before version 6, use channel

CREATE TABLE irc_servers (
	server      TEXT PRIMARY KEY,
	casemapping TEXT NOT NULL                 -- the last CASEMAPPING announced: ascii, rfc1459, rfc1459-strict
);
