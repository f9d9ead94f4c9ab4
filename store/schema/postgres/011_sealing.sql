-- PostgreSQL: version 11: how the key that seals stored secrets is derived from
-- PASSERELLE_STORE_KEY. One row, written at the first start with a key
-- (store/secret.go). Secrets sealed before this version ("sealed:v1:") are
-- re-sealed at start.
CREATE TABLE sealing (
	id          BIGINT PRIMARY KEY CHECK (id = 1),
	kdf         TEXT NOT NULL,  -- "hkdf-sha256", or "argon2id t=… m=… p=…" for a passphrase
	salt        BYTEA NOT NULL,  -- random, per database
	check_value TEXT NOT NULL   -- a known text sealed under the key: a wrong key is refused at start
);
