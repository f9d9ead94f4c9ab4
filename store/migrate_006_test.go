package store

import (
	"testing"
)

// Version 6 keeps the IRC channel rows of version 5 (with an empty
// spelling) and adds the per-server case mappings.
func TestUpgradeToIRCCasemap(t *testing.T) {
	path := testDB(t)
	old, err := open(path, 5)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.db.Exec(`INSERT INTO irc_channels (jid, server, channel, persistent, nick) VALUES ('a@example.org', 'irc.example.net', '#a{b', 1, 'al')`); err != nil {
		t.Fatal(err)
	}
	old.Close()

	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v, _ := s.Version(); v < 6 {
		t.Fatalf("version = %d", v)
	}
	var channel, name, nick string
	var persistent bool
	if err := s.db.QueryRow(`SELECT channel, name, nick, persistent FROM irc_channels`).Scan(&channel, &name, &nick, &persistent); err != nil {
		t.Fatal(err)
	}
	if channel != "#a{b" || name != "" || nick != "al" || !persistent {
		t.Errorf("row after the upgrade: %q %q %q %v", channel, name, nick, persistent)
	}
	if _, err := s.db.Exec(`INSERT INTO irc_servers (server, casemapping) VALUES ('irc.example.net', 'ascii')`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.Exec(`INSERT INTO irc_servers (server, casemapping) VALUES ('irc.example.net', 'rfc1459')`); err == nil {
		t.Error("two case mappings for one server")
	}
}
