-- PostgreSQL: version 10: the strict transport security policies (IRCv3 sts) that IRC
-- servers announced on verified TLS connections. A policy is the server's,
-- not a user's: while it is in force every connection to the host uses TLS.
CREATE TABLE irc_sts (
	host     TEXT    PRIMARY KEY,   -- the server name as the users give it
	port     BIGINT  NOT NULL,      -- the TLS port the policy was announced on
	duration BIGINT  NOT NULL,      -- seconds, as last announced
	expires  BIGINT  NOT NULL       -- unix seconds
);
