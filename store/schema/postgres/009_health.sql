-- PostgreSQL: version 9: the row /healthz writes to check that the database can
-- commit (a ping or a read succeeds on a full disk).
CREATE TABLE health (
	id      BIGINT PRIMARY KEY CHECK (id = 1),
	checked BIGINT  NOT NULL             -- unix milliseconds of the last check
);
