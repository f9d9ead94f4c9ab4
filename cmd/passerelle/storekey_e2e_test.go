package main

// End-to-end tests of the stored secrets (PASSERELLE_STORE_KEY): the built
// gateway between a real Prosody and a real ngircd that requires a server
// password, with the test reading and changing the SQLite file between
// runs of the gateway.

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"passerelle/cmd/internal/harness"
	"passerelle/component/xmlel"
)

// ircServerPW is the server password the test's ngircd requires.
const ircServerPW = "sesame-7f3a91"

// openDB opens the gateway's SQLite file directly (the gateway is stopped).
func openDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	if testCluster != nil {
		t.Skip("reads and writes the SQLite file (PASSERELLE_TEST_DB=postgres)")
	}
	db, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func regFields(t *testing.T, db *sql.DB, jid string) map[string]string {
	t.Helper()
	var raw string
	if err := db.QueryRow(`SELECT fields FROM registrations WHERE domain = ? AND jid = ?`, ircDomain, jid).Scan(&raw); err != nil {
		t.Fatalf("registration of %s: %v", jid, err)
	}
	var f map[string]string
	if err := json.Unmarshal([]byte(raw), &f); err != nil {
		t.Fatal(err)
	}
	return f
}

func setRegField(t *testing.T, db *sql.DB, jid, field, value string) {
	t.Helper()
	f := regFields(t, db, jid)
	f[field] = value
	b, _ := json.Marshal(f)
	if _, err := db.Exec(`UPDATE registrations SET fields = ? WHERE domain = ? AND jid = ?`, string(b), ircDomain, jid); err != nil {
		t.Fatal(err)
	}
}

func netSettings(t *testing.T, db *sql.DB, jid, server string) map[string]any {
	t.Helper()
	var raw string
	if err := db.QueryRow(`SELECT settings FROM irc_networks WHERE jid = ? AND server = ?`, jid, server).Scan(&raw); err != nil {
		t.Fatalf("settings of %s for %s: %v", jid, server, err)
	}
	var s map[string]any
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		t.Fatal(err)
	}
	return s
}

func setNetSettings(t *testing.T, db *sql.DB, jid, server string, s map[string]any) {
	t.Helper()
	b, _ := json.Marshal(s)
	if _, err := db.Exec(`INSERT INTO irc_networks (jid, server, settings) VALUES (?, ?, ?)
		ON CONFLICT (jid, server) DO UPDATE SET settings = excluded.settings`, jid, server, string(b)); err != nil {
		t.Fatal(err)
	}
}

// storedSecrets returns every registration and network settings row, for
// looking for clear passwords and comparing before and after a start.
func storedSecrets(t *testing.T, db *sql.DB) string {
	t.Helper()
	var out []string
	for _, q := range []string{`SELECT fields FROM registrations`, `SELECT settings FROM irc_networks`} {
		rows, err := db.Query(q)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var s string
			rows.Scan(&s)
			out = append(out, s)
		}
		rows.Close()
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

func wantSealedV2(t *testing.T, what, v string) {
	t.Helper()
	if !strings.HasPrefix(v, "sealed:v2:") || strings.Contains(v, ircServerPW) {
		t.Errorf("%s stored as %q, want sealed:v2:…", what, v)
	}
}

// joinIRC sends a MUC join to #sec on server and returns the first answer
// for that occupant: the self-presence or an error.
func joinIRC(t *testing.T, c *harness.Client, server, nick string) *xmlel.Element {
	t.Helper()
	occ := "#sec%" + server + "@" + ircDomain + "/" + nick
	c.Send(t, "<presence to='%s'>%s</presence>", harness.Esc(occ), mucX())
	return c.Expect(t, wait, "an answer to the join of "+occ, func(e *xmlel.Element) bool {
		return harness.IsPresence(e) && e.Attr("from") == occ &&
			(e.Attr("type") == "error" || (e.Attr("type") == "" && statusCodes(e)["110"]))
	})
}

func wantJoined(t *testing.T, p *xmlel.Element, who string) {
	t.Helper()
	if p.Attr("type") == "error" {
		t.Fatalf("%s did not join (the server password did not reach ngircd?): %s", who, p)
	}
}

// wantRefused checks that the join of nick was refused, and that ngircd
// refused it for its password (the gateway sent none).
func wantRefused(t *testing.T, ngircd *harness.Ngircd, p *xmlel.Element, nick string) {
	t.Helper()
	if p.Attr("type") != "error" {
		t.Errorf("%s joined with a password sealed for someone or something else: %s", nick, p)
	}
	if log := ngircd.LogTail(200); !strings.Contains(log, `User "`+nick+`!~`+nick+`@127.0.0.1" rejected (connection`) ||
		!strings.Contains(log, "Bad server password") {
		t.Errorf("ngircd did not refuse %s for the password:\n%s", nick, log)
	}
}

func stopGateway(t *testing.T, e *gwEnv) {
	t.Helper()
	e.gw.Signal(syscall.SIGTERM)
	if code := e.gw.Wait(t, wait); code != 0 {
		t.Fatalf("exit code after SIGTERM = %d\n%s", code, e.gw.Output())
	}
}

// A password stored sealed is bound to its user and field: copied into
// another user's registration, or into the settings of another network,
// it is not used, and the log says why.
func TestStoredSecretsBound(t *testing.T) {
	ngircd := harness.StartNgircd(t)
	ngircd.RequirePassword(t, ircServerPW)
	_, port, _ := net.SplitHostPort(ngircd.Addr)
	srv := startServer(t, "prosody")
	env := baseEnv(t, srv)
	env["PASSERELLE_IRC_ALLOW_PRIVATE"] = "true"
	e := startGateway(t, srv, env)

	alice := e.dial(t, "alice@localhost")
	bob := e.dial(t, "bob@localhost")
	dave := e.dial(t, "dave@localhost")
	wantResult(t, register(alice, t, ircDomain, "nick", "alice", "password", ircServerPW), "alice's registration")
	wantResult(t, register(bob, t, ircDomain, "nick", "bob", "password", "bobs-own-password"), "bob's registration")
	wantResult(t, register(dave, t, ircDomain, "nick", "dave"), "dave's registration")
	for _, c := range []*harness.Client{alice, bob, dave} {
		wantResult(t, configureNetwork(t, c, "localhost", "ports", port, "tls_ports", ""), "configure localhost")
	}
	// dave's password is in his settings for 127.0.0.1 (the same ngircd).
	wantResult(t, configureNetwork(t, dave, "127.0.0.1", "ports", port, "tls_ports", "", "password", ircServerPW), "configure 127.0.0.1")
	wantJoined(t, joinIRC(t, alice, "localhost", "alice"), "alice (registered password)")
	wantJoined(t, joinIRC(t, dave, "127.0.0.1", "dave"), "dave (network password)")
	stopGateway(t, e)

	db := openDB(t, env["PASSERELLE_DB"])
	t.Run("stored sealed v2", func(t *testing.T) {
		wantSealedV2(t, "alice's registered password", regFields(t, db, "alice@localhost")["password"])
		wantSealedV2(t, "dave's network password", netSettings(t, db, "dave@localhost", "127.0.0.1")["password"].(string))
		if all := storedSecrets(t, db); strings.Contains(all, ircServerPW) || strings.Contains(all, "bobs-own-password") {
			t.Errorf("a password is stored in clear:\n%s", all)
		}
	})

	// bob gets alice's sealed password; dave's password for 127.0.0.1
	// goes into his settings for localhost.
	setRegField(t, db, "bob@localhost", "password", regFields(t, db, "alice@localhost")["password"])
	local := netSettings(t, db, "dave@localhost", "localhost")
	local["password"] = netSettings(t, db, "dave@localhost", "127.0.0.1")["password"]
	setNetSettings(t, db, "dave@localhost", "localhost", local)
	db.Close()

	e = startGateway(t, srv, env)
	t.Run("moved to another user", func(t *testing.T) {
		wantRefused(t, ngircd, joinIRC(t, bob, "localhost", "bob"), "bob")
		e.gw.WaitOutput(t, wait, "password of bob@localhost on irc.localhost: the value was sealed for another user or field")
	})
	t.Run("moved to another field", func(t *testing.T) {
		wantRefused(t, ngircd, joinIRC(t, dave, "localhost", "dave"), "dave")
		e.gw.WaitOutput(t, wait, "irc_networks/localhost/password of dave@localhost on irc.localhost: the value was sealed for another user or field")
	})
	t.Run("in place, still used", func(t *testing.T) {
		wantJoined(t, joinIRC(t, alice, "localhost", "alice"), "alice after the restart")
	})
}

// sealV1 seals v as the gateway did before the sealed:v2 format:
// "sealed:v1:" + base64(nonce | AES-256-GCM under
// SHA-256("passerelle store key\x00" + key)), no additional data.
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

// v1Schema is the last schema version of the sealed:v1 format.
const v1Schema = 7

// writeV1Database creates a database of schema version 7 from the
// migration files, as the gateway of that version left it.
func writeV1Database(t *testing.T, path string) *sql.DB {
	t.Helper()
	db := openDB(t, path)
	files, err := filepath.Glob("../../store/schema/*.sql")
	if err != nil || len(files) < v1Schema {
		t.Fatalf("schema files: %v %v", files, err)
	}
	sort.Strings(files)
	for _, f := range files[:v1Schema] {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec(string(b)); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
	if _, err := db.Exec(`PRAGMA user_version = 7`); err != nil {
		t.Fatal(err)
	}
	return db
}

// A database whose passwords were sealed in the previous format is
// re-sealed at start, and the passwords still reach ngircd; a wrong key is
// refused first (exit 2) without changing the database.
func TestStoredSecretsV1Migrated(t *testing.T) {
	ngircd := harness.StartNgircd(t)
	ngircd.RequirePassword(t, ircServerPW)
	_, port, _ := net.SplitHostPort(ngircd.Addr)
	portN, _ := strconv.Atoi(port)
	srv := startServer(t, "prosody")
	env := baseEnv(t, srv)
	env["PASSERELLE_IRC_ALLOW_PRIVATE"] = "true"
	key := "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" // a random key: HKDF
	env["PASSERELLE_STORE_KEY"] = key

	db := writeV1Database(t, env["PASSERELLE_DB"])
	reg := func(jid string, fields map[string]string) {
		b, _ := json.Marshal(fields)
		if _, err := db.Exec(`INSERT INTO registrations (domain, jid, fields, created, updated) VALUES (?, ?, ?, 1, 1)`, ircDomain, jid, string(b)); err != nil {
			t.Fatal(err)
		}
	}
	reg("alice@localhost", map[string]string{"nick": "alice", "password": sealV1(t, key, ircServerPW)})
	reg("dave@localhost", map[string]string{"nick": "dave"})
	setNetSettings(t, db, "alice@localhost", "localhost", map[string]any{"ports": []int{portN}, "tls_ports": []int{}, "verify_cert": true})
	setNetSettings(t, db, "dave@localhost", "localhost", map[string]any{"ports": []int{portN}, "tls_ports": []int{}, "verify_cert": true,
		"password": sealV1(t, key, ircServerPW)})
	before := storedSecrets(t, db)
	db.Close()

	t.Run("wrong key refused at start", func(t *testing.T) {
		bad := map[string]string{}
		for k, v := range env {
			bad[k] = v
		}
		bad["PASSERELLE_STORE_KEY"] = "not the key"
		gw := harness.StartGateway(t, harness.BuildBinary(t), bad)
		if code := gw.Wait(t, wait); code != 2 {
			t.Errorf("exit code with a wrong key = %d, want 2", code)
		}
		if out := gw.Output(); !strings.Contains(out, "bad configuration: PASSERELLE_STORE_KEY does not open the secrets stored in the database") {
			t.Errorf("output does not name the key:\n%s", out)
		}
		if after := storedSecrets(t, openDB(t, env["PASSERELLE_DB"])); after != before {
			t.Errorf("the wrong key changed the database:\n%s\nwas:\n%s", after, before)
		}
	})

	e := startGateway(t, srv, env)
	e.gw.WaitOutput(t, wait, `msg="stored secrets of the previous format re-sealed, bound to their user and field" values=2`)
	alice := e.dial(t, "alice@localhost")
	dave := e.dial(t, "dave@localhost")
	wantJoined(t, joinIRC(t, alice, "localhost", "alice"), "alice (registered password of the previous format)")
	wantJoined(t, joinIRC(t, dave, "localhost", "dave"), "dave (network password of the previous format)")
	stopGateway(t, e)

	db = openDB(t, env["PASSERELLE_DB"])
	wantSealedV2(t, "alice's registered password", regFields(t, db, "alice@localhost")["password"])
	wantSealedV2(t, "dave's network password", netSettings(t, db, "dave@localhost", "localhost")["password"].(string))
	if all := storedSecrets(t, db); strings.Contains(all, "sealed:v1:") {
		t.Errorf("values of the previous format left:\n%s", all)
	}
}
