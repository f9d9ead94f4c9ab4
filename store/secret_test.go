package store

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// hexKey is a random key (HKDF); tests use it where the derivation does
// not matter, as Argon2id costs tens of milliseconds.
const hexKey = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

func sealerFor(t *testing.T, s *Store, key string) *Sealer {
	t.Helper()
	sl, _, err := s.OpenSealer(context.Background(), key, "irc.example.org")
	if err != nil {
		t.Fatal(err)
	}
	return sl
}

func TestSealer(t *testing.T) {
	s := openTest(t)
	alice := Binding{Domain: "irc.example.org", JID: "alice@example.org", Field: "password"}
	clear := sealerFor(t, s, "")
	if clear.Seal("pw", alice) != "pw" {
		t.Fatal("clear sealer changed the value")
	}
	sl := sealerFor(t, s, hexKey)
	sealed := sl.Seal("hunter2", alice)
	if !strings.HasPrefix(sealed, "sealed:v2:") || strings.Contains(sealed, "hunter2") || sealed == sl.Seal("hunter2", alice) {
		t.Fatalf("sealed value not encrypted with a fresh nonce: %q", sealed)
	}
	if v, err := sl.Open(sealed, alice); err != nil || v != "hunter2" {
		t.Fatalf("open = %q %v", v, err)
	}
	for _, b := range []Binding{
		{Domain: alice.Domain, JID: "bob@example.org", Field: alice.Field},
		{Domain: alice.Domain, JID: alice.JID, Field: "sasl_password"},
		{Domain: "mail.example.org", JID: alice.JID, Field: alice.Field},
		// The parts are delimited: moving characters between them differs.
		{Domain: alice.Domain, JID: alice.JID + "password", Field: ""},
	} {
		_, err := sl.Open(sealed, b)
		if !errors.Is(err, ErrNotBound) || !strings.Contains(err.Error(), b.JID) || !strings.Contains(err.Error(), "sealed for another user or field") {
			t.Errorf("opened under %+v: %v", b, err)
		}
	}
	if _, err := clear.Open(sealed, alice); !errors.Is(err, ErrNoKey) {
		t.Fatalf("no key: %v", err)
	}
	if _, err := sl.Open(sealedPrefix+"!!", alice); !errors.Is(err, errCorrupt) {
		t.Fatalf("corrupt value: %v", err)
	}
	if _, err := sl.Open("sealed:v3:AAAA", alice); err == nil || !strings.Contains(err.Error(), "unknown format sealed:v3 ") {
		t.Fatalf("unknown format: %v", err)
	}
	if v, _ := sl.Open("plain", alice); v != "plain" {
		t.Fatal("clear value not passed through")
	}
}

// A key of 64 hex digits or base64 of 32 bytes is random key material
// (HKDF); anything else is a passphrase (Argon2id).
func TestRandomKey(t *testing.T) {
	for key, random := range map[string]bool{
		hexKey: true,
		"ABEiM0RVZneImaq7zN3u/wARIjNEVWZ3iJmqu8zd7v8=":       true, // openssl rand -base64 32
		"ABEiM0RVZneImaq7zN3u_wARIjNEVWZ3iJmqu8zd7v8":        true,
		"00112233445566778899aabbccddeeff":                   false, // 16 bytes
		"test-store-key":                                     false,
		"correct horse battery staple, and a few more words": false,
	} {
		if _, got := RandomKey(key); got != random {
			t.Errorf("RandomKey(%q) = %v", key, got)
		}
	}
}

// The first start with a key records its derivation; a later start with
// another key, with the other kind of key, or without a key while sealed
// values exist, fails with ErrWrongKey and changes nothing.
func TestOpenSealerChecksTheKey(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct{ key, other, kdf string }{
		{"a passphrase", "another passphrase", "argon2id t=2 m=19456 p=1"},
		{hexKey, strings.Repeat("ab", 32), "hkdf-sha256"},
	} {
		s := openTest(t)
		sl, rep, err := s.OpenSealer(ctx, tc.key, "")
		if err != nil || !rep.Created || rep.KDF != tc.kdf {
			t.Fatalf("first start with %q: %+v %v", tc.key, rep, err)
		}
		b := Binding{Domain: "irc.example.org", JID: "a@example.org", Field: "password"}
		if err := s.PutRegistration(ctx, b.Domain, b.JID, map[string]string{"password": sl.Seal("pw", b)}, nil); err != nil {
			t.Fatal(err)
		}
		again, rep, err := s.OpenSealer(ctx, tc.key, "")
		if err != nil || rep.Created || rep.KDF != tc.kdf {
			t.Fatalf("second start: %+v %v", rep, err)
		}
		r, _ := s.GetRegistration(ctx, b.Domain, b.JID)
		if v, err := again.Open(r.Fields["password"], b); err != nil || v != "pw" {
			t.Fatalf("open after a restart: %q %v", v, err)
		}
		for _, wrong := range []string{tc.other, "", "a passphrase", hexKey} {
			if wrong == tc.key {
				continue
			}
			_, _, err := s.OpenSealer(ctx, wrong, "")
			if !errors.Is(err, ErrWrongKey) || !strings.Contains(err.Error(), "PASSERELLE_STORE_KEY") {
				t.Errorf("key %q instead of %q: %v", wrong, tc.key, err)
			}
		}
		var kdf string
		if err := s.db.QueryRow(`SELECT kdf FROM sealing`).Scan(&kdf); err != nil || kdf != tc.kdf {
			t.Errorf("recorded derivation after wrong keys: %q %v", kdf, err)
		}
	}
}

// A key given to a database without sealed values is recorded; a start
// without a key then works (and stores new values in clear).
func TestOpenSealerWithoutKey(t *testing.T) {
	s := openTest(t)
	sealerFor(t, s, hexKey)
	if sl := sealerFor(t, s, ""); sl.Encrypting() {
		t.Fatal("encrypting without a key")
	}
}

// Failures of the database or of what it holds stop OpenSealer with an
// error that is not ErrWrongKey (exit 1, not a configuration error).
func TestOpenSealerFailures(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	if _, err := s.db.Exec(`INSERT INTO sealing (id, kdf, salt, check_value) VALUES (1, 'scrypt N=1', ?, '')`, []byte{0}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.OpenSealer(ctx, hexKey, ""); err == nil || errors.Is(err, ErrWrongKey) || !strings.Contains(err.Error(), "unknown key derivation") {
		t.Errorf("unknown derivation: %v", err)
	}

	s = openTest(t)
	if _, err := s.db.Exec(`INSERT INTO registrations (domain, jid, fields, created, updated) VALUES ('d', 'a@x', '{"password":"sealed:v1:x"', 0, 0)`); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.OpenSealer(ctx, hexKey, ""); err == nil || errors.Is(err, ErrWrongKey) || !strings.Contains(err.Error(), "decode") {
		t.Errorf("corrupt row: %v", err)
	}
	var n int
	if s.db.QueryRow(`SELECT count(*) FROM sealing`).Scan(&n); n != 0 {
		t.Error("the key was recorded although the start failed")
	}

	for _, c := range []struct{ setup, want string }{
		{`DROP TABLE sealing`, "failed to read the store key's derivation"},
		{`CREATE TRIGGER no_insert BEFORE INSERT ON sealing BEGIN SELECT RAISE(ABORT, 'refused'); END`, "failed to record the store key's derivation"},
		{`INSERT INTO registrations (domain, jid, fields, created, updated) VALUES ('d', 'a@x', '{"password":"` + sealV1(t, hexKey, "pw") + `"}', 0, 0);
		  CREATE TRIGGER no_update BEFORE UPDATE ON registrations BEGIN SELECT RAISE(ABORT, 'refused'); END`, "failed to store re-sealed values"},
	} {
		if strings.Contains(c.setup, "TRIGGER") {
			sqliteOnly(t) // a trigger in SQLite's dialect
		}
		s := openTest(t)
		if _, err := s.db.Exec(c.setup); err != nil {
			t.Fatal(err)
		}
		before := dump(t, s)
		if _, _, err := s.OpenSealer(ctx, hexKey, ""); err == nil || errors.Is(err, ErrWrongKey) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v", c.setup, err)
		}
		if dump(t, s) != before {
			t.Errorf("%s: stored values changed", c.setup)
		}
	}

	s.Close()
	for _, key := range []string{"", hexKey} {
		if _, _, err := s.OpenSealer(ctx, key, ""); err == nil || errors.Is(err, ErrWrongKey) {
			t.Errorf("closed database, key %q: %v", key, err)
		}
	}
}
