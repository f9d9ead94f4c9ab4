package store

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// sealV1 seals v as version 7's binary did: "sealed:v1:" + base64(nonce |
// AES-256-GCM under SHA-256("passerelle store key\x00" + key)), no
// additional data.
func sealV1(t *testing.T, key, v string) string {
	t.Helper()
	k := sha256.Sum256([]byte("passerelle store key\x00" + key))
	block, err := aes.NewCipher(k[:])
	if err != nil {
		t.Fatal(err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, gcm.NonceSize())
	rand.Read(nonce)
	return "sealed:v1:" + base64.RawStdEncoding.EncodeToString(gcm.Seal(nonce, nonce, []byte(v), nil))
}

// v1Database writes a database of version 7 (the last without the sealing
// table) holding secrets sealed in the first format under key, and one
// sealed under another key.
func v1Database(t *testing.T, key string) string {
	t.Helper()
	path := testDB(t)
	old, err := open(path, 7)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	reg := func(domain, jid string, fields map[string]string) {
		b, _ := json.Marshal(fields)
		if _, err := old.db.Exec(`INSERT INTO registrations (domain, jid, fields, created, updated) VALUES (?, ?, ?, 1, 1)`, domain, jid, string(b)); err != nil {
			t.Fatal(err)
		}
	}
	reg("irc.example.org", "alice@example.org", map[string]string{"nick": "alice", "password": sealV1(t, key, "alice-irc")})
	reg("irc.example.org", "bob@example.org", map[string]string{"nick": "bob", "password": sealV1(t, key, "bob-irc")})
	reg("mail.example.org", "alice@example.org", map[string]string{"address": "alice",
		"imap_password": sealV1(t, key, "alice-imap"), "smtp_password": sealV1(t, "an older key", "lost")})
	reg("sms.example.org", "carol@example.org", map[string]string{"number": "+15550001111"})
	settings := `{"ports":[6667],"tls_ports":[],"verify_cert":true,"password":"` + sealV1(t, key, "alice-net") + `","throttle_limit":0}`
	if _, err := old.db.Exec(`INSERT INTO irc_networks (jid, server, settings) VALUES ('alice@example.org', 'irc.example.net', ?)`, settings); err != nil {
		t.Fatal(err)
	}
	return path
}

func dump(t *testing.T, s *Store) string {
	t.Helper()
	var all []string
	for _, q := range []string{`SELECT fields FROM registrations ORDER BY domain, jid`, `SELECT settings FROM irc_networks ORDER BY jid, server`} {
		rows, err := s.db.Query(q)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var v string
			if err := rows.Scan(&v); err != nil {
				t.Fatal(err)
			}
			all = append(all, v)
		}
		if err := rows.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return strings.Join(all, "|")
}

// Version 11 re-seals the secrets of version 7 at the first start with the
// key: every value the key opens is bound to its domain, user and field;
// one it does not open is kept as it was.
func TestUpgradeSealedSecrets(t *testing.T) {
	ctx := context.Background()
	const key = "the old key"
	s, err := Open(v1Database(t, key))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v, _ := s.Version(); v < 11 {
		t.Fatalf("version = %d", v)
	}
	alice := Binding{Domain: "irc.example.org", JID: "alice@example.org", Field: "password"}
	r, _ := s.GetRegistration(ctx, alice.Domain, alice.JID)
	v1 := r.Fields["password"]
	// Before the re-sealing, the stored first-format value opens.
	if v, err := (&Sealer{aead: newGCM(make([]byte, 32)), v1: v1AEAD(key)}).Open(v1, alice); err != nil || v != "alice-irc" {
		t.Fatalf("first format: %q %v", v, err)
	}

	sl, rep, err := s.OpenSealer(ctx, key, "irc.example.org")
	if err != nil {
		t.Fatal(err)
	}
	if rep.Resealed != 4 || len(rep.Kept) != 1 || !strings.Contains(rep.Kept[0], "smtp_password of alice@example.org on mail.example.org") {
		t.Fatalf("report: %+v", rep)
	}
	all := dump(t, s)
	if n := strings.Count(all, "sealed:v2:"); n != 4 {
		t.Errorf("%d values of the second format:\n%s", n, all)
	}
	if n := strings.Count(all, "sealed:v1:"); n != 1 {
		t.Errorf("%d values of the first format left:\n%s", n, all)
	}
	for _, clear := range []string{"alice-irc", "bob-irc", "alice-imap", "alice-net"} {
		if strings.Contains(all, clear) {
			t.Errorf("%s stored in clear", clear)
		}
	}
	for _, c := range []struct {
		b    Binding
		want string
	}{
		{alice, "alice-irc"},
		{Binding{"irc.example.org", "bob@example.org", "password"}, "bob-irc"},
		{Binding{"mail.example.org", "alice@example.org", "imap_password"}, "alice-imap"},
	} {
		r, err := s.GetRegistration(ctx, c.b.Domain, c.b.JID)
		if err != nil {
			t.Fatal(err)
		}
		if v, err := sl.Open(r.Fields[c.b.Field], c.b); err != nil || v != c.want {
			t.Errorf("%v: %q %v", c.b, v, err)
		}
		if r.Fields["nick"] != "" && r.Fields["nick"] != strings.Split(c.b.JID, "@")[0] {
			t.Errorf("nick changed: %v", r.Fields)
		}
	}
	var settings string
	if err := s.db.QueryRow(`SELECT settings FROM irc_networks`).Scan(&settings); err != nil {
		t.Fatal(err)
	}
	var net struct {
		Ports    []int
		Password string
	}
	if err := json.Unmarshal([]byte(settings), &net); err != nil {
		t.Fatal(err)
	}
	nb := Binding{Domain: "irc.example.org", JID: "alice@example.org", Field: NetworkField("irc.example.net", "password")}
	if v, err := sl.Open(net.Password, nb); err != nil || v != "alice-net" || len(net.Ports) != 1 || net.Ports[0] != 6667 {
		t.Errorf("network settings %s: %q %v", settings, v, err)
	}
	// Now bound: alice's value in bob's place or in another field does not open.
	r, _ = s.GetRegistration(ctx, alice.Domain, alice.JID)
	if _, err := sl.Open(r.Fields["password"], Binding{"irc.example.org", "bob@example.org", "password"}); !errors.Is(err, ErrNotBound) {
		t.Errorf("alice's password opened as bob's: %v", err)
	}
	if _, err := sl.Open(net.Password, alice); !errors.Is(err, ErrNotBound) {
		t.Errorf("network password opened as the registration's: %v", err)
	}

	// A second start finds nothing to re-seal.
	before := dump(t, s)
	if _, rep, err := s.OpenSealer(ctx, key, "irc.example.org"); err != nil || rep.Resealed != 0 || len(rep.Kept) != 1 || rep.Created {
		t.Fatalf("second start: %+v %v", rep, err)
	}
	if dump(t, s) != before {
		t.Error("the second start changed stored values")
	}
}

// Without the IRC domain, the IRC network settings keep the first format
// (their binding needs it); they still open, and are re-sealed once it is
// given.
func TestUpgradeSealedSecretsWithoutIRC(t *testing.T) {
	ctx := context.Background()
	const key = "the old key"
	s, err := Open(v1Database(t, key))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, rep, err := s.OpenSealer(ctx, key, ""); err != nil || rep.Resealed != 3 {
		t.Fatalf("%+v %v", rep, err)
	}
	var settings string
	s.db.QueryRow(`SELECT settings FROM irc_networks`).Scan(&settings)
	if !strings.Contains(settings, "sealed:v1:") {
		t.Fatalf("settings: %s", settings)
	}
	if _, rep, err := s.OpenSealer(ctx, key, "irc.example.org"); err != nil || rep.Resealed != 1 {
		t.Fatalf("%+v %v", rep, err)
	}
}

// A wrong key (or none) at the first start of version 11 is refused and
// nothing is re-sealed or recorded; the right key then works.
func TestUpgradeSealedSecretsWrongKey(t *testing.T) {
	ctx := context.Background()
	s, err := Open(v1Database(t, "the old key"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	before := dump(t, s)
	for _, wrong := range []string{"not the old key", hexKey, ""} {
		_, _, err := s.OpenSealer(ctx, wrong, "irc.example.org")
		if !errors.Is(err, ErrWrongKey) {
			t.Fatalf("key %q: %v", wrong, err)
		}
	}
	if dump(t, s) != before {
		t.Error("a wrong key changed stored values")
	}
	var n int
	if s.db.QueryRow(`SELECT count(*) FROM sealing`).Scan(&n); n != 0 {
		t.Error("a wrong key was recorded")
	}
	if _, rep, err := s.OpenSealer(ctx, "the old key", "irc.example.org"); err != nil || rep.Resealed != 4 {
		t.Fatalf("right key: %+v %v", rep, err)
	}
}
