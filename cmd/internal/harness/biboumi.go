package harness

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Biboumi is a throwaway biboumi (the established XMPP↔IRC gateway, Debian
// package biboumi) connected to an XMPP server as the XEP-0114 component
// Domain, for comparisons with passerelle's IRC bridge. Its SQLite database,
// configuration and log live in a temporary directory; the built-in identd
// is disabled.
//
// Biboumi connects to an IRC server on ports 6697/6670 (TLS) then 6667 by
// default: a user points it at the harness's ngircd by running the ad-hoc
// command "configure" on <server>@Domain with ports=<ngircd port> and an
// empty tls_ports list, which is what a user would do.
type Biboumi struct {
	Domain string

	dir     string
	conf    string
	logPath string

	daemon
}

// StartBiboumi starts biboumi for the component domain of srv (which must
// be one of srv's ServerOptions.Components) and waits until it has
// authenticated with the server. extra are additional "key=value" lines of
// its configuration file (e.g. "log_level=1"; a later line overrides an
// earlier one). It is killed in t.Cleanup. The test is skipped when biboumi
// is not installed (failed when $CI is set).
func StartBiboumi(t testing.TB, srv Server, domain string, extra ...string) *Biboumi {
	t.Helper()
	requireBinary(t, "biboumi")
	host, port, err := net.SplitHostPort(srv.ComponentAddr())
	if err != nil {
		t.Fatalf("harness: biboumi: component address %q: %v", srv.ComponentAddr(), err)
	}
	dir := t.TempDir()
	b := &Biboumi{
		Domain:  domain,
		dir:     dir,
		conf:    filepath.Join(dir, "biboumi.cfg"),
		logPath: filepath.Join(dir, "biboumi.log"),
	}
	lines := []string{
		"hostname=" + domain,
		"password=" + srv.Secret(),
		"xmpp_server_ip=" + host,
		"port=" + port,
		"db_name=" + filepath.Join(dir, "biboumi.sqlite"),
		"log_file=" + b.logPath,
		"log_level=0",
		"identd_port=0",
		"realname_customization=true",
		"realname_from_jid=false",
		// No TLS is used towards the harness's IRC servers; an empty
		// policy directory keeps the system's policy files out.
		"policy_directory=" + dir,
	}
	lines = append(lines, extra...)
	for _, l := range extra {
		if !strings.Contains(l, "=") {
			t.Fatalf("harness: biboumi: configuration line %q is not key=value", l)
		}
	}
	if err := os.WriteFile(b.conf, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b.daemon = daemon{name: "biboumi", logTail: b.LogTail}
	b.killAtCleanup(t)
	b.Start(t)
	return b
}

// Start (re)starts biboumi and waits until it has authenticated with the
// XMPP server.
func (b *Biboumi) Start(t testing.TB) {
	t.Helper()
	before := len(b.readLog())
	authenticated := func() error {
		log := b.readLog()
		if len(log) < before {
			log = ""
		} else {
			log = log[before:]
		}
		if strings.Contains(log, "Authenticated with the XMPP server") {
			return nil
		}
		return errors.New("not yet authenticated with the XMPP server")
	}
	b.start(t, exec.Command("biboumi", b.conf), b.dir, filepath.Join(b.dir, "console.log"), nil, authenticated)
}

// Stop sends SIGTERM and waits for biboumi to exit (SIGKILL after 10 s).
func (b *Biboumi) Stop(t testing.TB) { t.Helper(); b.stop(t) }

// Pid is the process id of the running biboumi (0 before Start).
func (b *Biboumi) Pid() int { return b.pid() }

func (b *Biboumi) readLog() string {
	data, _ := os.ReadFile(b.logPath)
	return string(data)
}

// LogTail returns the last n lines of biboumi's log and console output.
func (b *Biboumi) LogTail(lines int) string {
	out := fileTail(b.logPath, lines)
	if c := fileTail(filepath.Join(b.dir, "console.log"), lines); strings.TrimSpace(c) != "" {
		out += "\n--- biboumi console output ---\n" + c
	}
	return out
}
