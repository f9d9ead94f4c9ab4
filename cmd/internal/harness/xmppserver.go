package harness

import (
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// ServerOptions configures StartProsody and StartEjabberd.
type ServerOptions struct {
	Domain     string   // default "localhost"
	ExtraHosts []string // additional virtual hosts, e.g. "other.localhost"
	Components []string // XEP-0114 component domains, e.g. "irc.localhost"; all share Secret
	Secret     string   // component secret; default: 128 random bits in hex
	// Upload enables XEP-0363 HTTP upload on "upload.<Domain>" with its
	// HTTP server on a loopback port (Prosody: mod_http_file_share;
	// ejabberd: mod_http_upload). Users of the virtual hosts and the
	// components may request slots. See Server.UploadDomain and HTTPAddr.
	Upload bool
	// MAM enables XEP-0313 message archives for the users of the virtual
	// hosts (Prosody only: mod_mam with internal storage), archiving every
	// chat message by default and never expiring it.
	MAM bool
	// Carbons enables XEP-0280 message carbons (Prosody only: mod_carbons,
	// as Prosody's default configuration has it).
	Carbons bool
	// C2SStanzaSizeLimit, when set, is the largest stanza in bytes the
	// server takes from a client (Prosody only: c2s_stanza_size_limit;
	// its default is 256 KiB).
	C2SStanzaSizeLimit int
	// Deploy configures the components and their privileges (XEP-0356
	// roster, message and presence) from the repository's deploy/ snippet
	// for the server (deploy/prosody.cfg.lua), as shipped, with example.org
	// replaced by Domain and the port and secret filled in. Components
	// must then be the snippet's: irc., mail. and sms. of Domain.
	Deploy bool
	// DeployNoMessage (with Deploy, Prosody only) leaves the message
	// permission out of the snippet's privileges: the server advertises
	// the others.
	DeployNoMessage bool
	// DeployInstances (ejabberd only) configures the component listener,
	// its domain_balancing and the privileges from
	// deploy/ejabberd-instances.yml, the configuration for several
	// gateway instances, as shipped: example.org replaced by Domain, the
	// port and secret filled in. Components must be the snippet's, as
	// with Deploy.
	DeployInstances bool
	// LogLevel is the least level the server logs (Prosody only:
	// "debug", "info", "warn" or "error"; default "debug"). Benchmarks
	// raise it: at debug Prosody logs every stanza it routes.
	LogLevel string
	// NoNagle sets TCP_NODELAY on the server's connections (Prosody
	// only: network_settings.nagle = false). By default Prosody leaves
	// Nagle's algorithm on, so that its small writes wait for the
	// peer's (maybe delayed) acknowledgement of the previous one.
	NoNagle bool
}

// Server is a running XMPP server (Prosody or ejabberd).
type Server interface {
	Name() string          // "prosody" or "ejabberd"
	C2SAddr() string       // "127.0.0.1:port"
	ComponentAddr() string // XEP-0114 listener, "127.0.0.1:port"
	Secret() string
	Domain() string
	// AddUser creates the account jid ("user@host", or "user" for the
	// main Domain) with a random password, which it returns. It uses
	// prosodyctl / ejabberdctl; ejabberdctl needs the server running.
	AddUser(t testing.TB, jid string) (password string)
	// Stop sends SIGTERM and waits for the exit (SIGKILL after 10 s).
	Stop(t testing.TB)
	// Start (re)starts the server on the same ports and data directory and
	// waits until it is ready.
	Start(t testing.TB)
	// LogTail returns the last n lines of the server's log (and of its
	// console output, when there is any).
	LogTail(n int) string
	// UploadDomain ("upload.<Domain>") and HTTPAddr ("127.0.0.1:port") of
	// the XEP-0363 service; "" unless ServerOptions.Upload is set.
	UploadDomain() string
	HTTPAddr() string
}

// xmppServer is the part common to Prosody and ejabberd.
type xmppServer struct {
	kind        string
	opts        ServerOptions
	dir         string
	c2sPort     int
	compPort    int
	readyAddrs  []string
	logPath     string // the server's own log
	consolePath string // stdout+stderr
	stopComm    string // process to SIGTERM on Stop ("" = group leader)
	command     func() *exec.Cmd
	addUser     func(user, host, password string) ([]byte, error)

	httpPort int // XEP-0363 upload HTTP server (0 = none)

	mu sync.Mutex
	p  *proc
}

func (s *xmppServer) Name() string          { return s.kind }
func (s *xmppServer) C2SAddr() string       { return fmt.Sprintf("127.0.0.1:%d", s.c2sPort) }
func (s *xmppServer) ComponentAddr() string { return fmt.Sprintf("127.0.0.1:%d", s.compPort) }
func (s *xmppServer) Secret() string        { return s.opts.Secret }
func (s *xmppServer) Domain() string        { return s.opts.Domain }

// UploadDomain is the XEP-0363 upload service ("upload.<Domain>"), or ""
// when ServerOptions.Upload was not set.
func (s *xmppServer) UploadDomain() string {
	if s.httpPort == 0 {
		return ""
	}
	return "upload." + s.opts.Domain
}

// HTTPAddr is the loopback address of the upload HTTP server ("" without
// ServerOptions.Upload).
func (s *xmppServer) HTTPAddr() string {
	if s.httpPort == 0 {
		return ""
	}
	return fmt.Sprintf("127.0.0.1:%d", s.httpPort)
}

// Dir is the server's private temporary directory (config, data, logs).
func (s *xmppServer) Dir() string { return s.dir }

// LogPath is the path of the server's log file.
func (s *xmppServer) LogPath() string { return s.logPath }

func (s *xmppServer) LogTail(n int) string {
	out := fileTail(s.logPath, n)
	if s.consolePath == s.logPath {
		return out
	}
	if c := fileTail(s.consolePath, n); strings.TrimSpace(c) != "" {
		out += "\n--- " + s.kind + " console output ---\n" + c
	}
	return out
}

func (s *xmppServer) AddUser(t testing.TB, jid string) string {
	t.Helper()
	user, host, ok := strings.Cut(jid, "@")
	if !ok {
		host = s.opts.Domain
	}
	if user == "" || host == "" || strings.ContainsAny(jid, "/ ") {
		t.Fatalf("harness: AddUser: bad JID %q", jid)
	}
	password := randomHex(12)
	t0 := time.Now()
	out, err := s.addUser(user, host, password)
	if err != nil {
		t.Fatalf("harness: %s: registering %s@%s: %v\n%s", s.kind, user, host, err, out)
	}
	t.Logf("harness: %s: registered %s@%s in %v", s.kind, user, host, time.Since(t0).Round(time.Millisecond))
	return password
}

func (s *xmppServer) Start(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.p != nil && !s.p.exited() {
		t.Fatalf("harness: %s is already running", s.kind)
	}
	t0 := time.Now()
	if err := s.startLocked(); err != nil {
		t.Fatalf("harness: %v (the cleanup logs the end of the %s log)", err, s.kind)
	}
	t.Logf("harness: %s ready in %v (c2s %s, components %s)", s.kind, time.Since(t0).Round(time.Millisecond), s.C2SAddr(), s.ComponentAddr())
}

func (s *xmppServer) startLocked() error {
	console, err := os.OpenFile(s.consolePath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer console.Close()
	cmd := s.command()
	cmd.Stdout, cmd.Stderr = console, console
	p, err := startProc(s.kind, cmd)
	if err != nil {
		return err
	}
	s.p = p
	if err := waitReady(p, s.readyAddrs, startTimeout, func() error { return probeC2S(s.C2SAddr(), s.opts.Domain) }); err != nil {
		p.kill()
		return err
	}
	return nil
}

func (s *xmppServer) Stop(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.p == nil || s.p.exited() {
		return
	}
	t0 := time.Now()
	if s.p.terminate(s.stopComm, stopGrace) {
		t.Logf("harness: %s ignored SIGTERM for %v; killed it", s.kind, stopGrace)
		return
	}
	t.Logf("harness: %s stopped in %v (%s)", s.kind, time.Since(t0).Round(time.Millisecond), s.p.exitStatus())
}

// kill SIGKILLs the server's process group (cleanup).
func (s *xmppServer) kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.p != nil {
		s.p.kill()
	}
}

// registerCleanup dumps the log when the test failed, then kills the server.
func (s *xmppServer) registerCleanup(t testing.TB) {
	t.Cleanup(func() {
		if failed(t) {
			t.Logf("harness: last 60 lines of the %s log (%s):\n%s", s.kind, s.logPath, s.LogTail(60))
		}
		s.kill()
	})
}

func (o *ServerOptions) setDefaults() {
	if o.Domain == "" {
		o.Domain = "localhost"
	}
	if o.Secret == "" {
		o.Secret = randomHex(16)
	}
	if o.LogLevel == "" {
		o.LogLevel = "debug"
	}
}

// probeC2S opens a client stream and waits for the stream features.
func probeC2S(addr, domain string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := fmt.Fprintf(c, streamHeader, xmlAttr(domain)); err != nil {
		return err
	}
	d := xml.NewDecoder(c)
	for {
		tok, err := d.Token()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return errors.New("c2s probe: stream closed before features")
			}
			return fmt.Errorf("c2s probe: %w", err)
		}
		if se, ok := tok.(xml.StartElement); ok {
			switch {
			case se.Name.Local == "features":
				_, _ = io.WriteString(c, "</stream:stream>")
				return nil
			case se.Name.Local == "error" && se.Name.Space == nsStreams:
				return errors.New("c2s probe: stream error")
			}
		}
	}
}

// ---------------------------------------------------------------- Prosody

// prosodyPrivilegeModule is mod_privilege (XEP-0356) from Debian's
// prosody-modules, which the deploy snippet loads.
const prosodyPrivilegeModule = "/usr/lib/prosody/modules/mod_privilege/mod_privilege.lua"

// Prosody is the Server returned by StartProsody.
type Prosody struct {
	xmppServer
}

// StartProsody starts a throwaway Prosody on loopback and waits until it is
// ready. It is killed in t.Cleanup. The test is skipped when Prosody is not
// installed (failed when $CI is set).
func StartProsody(t testing.TB, opts ServerOptions) Server {
	t.Helper()
	requireBinary(t, "prosody", "prosodyctl")
	if opts.Deploy {
		requireFile(t, prosodyPrivilegeModule, "prosody-modules")
	}
	opts.setDefaults()
	dir := t.TempDir()
	s := &Prosody{xmppServer: xmppServer{
		kind:        "prosody",
		opts:        opts,
		dir:         dir,
		c2sPort:     FreePort(t),
		compPort:    FreePort(t),
		logPath:     filepath.Join(dir, "prosody.log"),
		consolePath: filepath.Join(dir, "console.log"),
	}}
	if opts.Upload {
		s.httpPort = FreePort(t)
	}
	s.readyAddrs = []string{s.C2SAddr(), s.ComponentAddr()}
	if s.httpPort != 0 {
		s.readyAddrs = append(s.readyAddrs, s.HTTPAddr())
	}
	for _, d := range []string{"data", "certs"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	cfg := filepath.Join(dir, "prosody.cfg.lua")
	if err := os.WriteFile(cfg, []byte(s.config()), 0o600); err != nil {
		t.Fatal(err)
	}
	env := serverEnv(dir)
	s.command = func() *exec.Cmd {
		cmd := exec.Command("prosody", "-F", "--config", cfg)
		cmd.Dir, cmd.Env = dir, env
		return cmd
	}
	s.addUser = func(user, host, password string) ([]byte, error) {
		cmd := exec.Command("prosodyctl", "--config", cfg, "register", user, host, password)
		cmd.Dir, cmd.Env = dir, env
		return runBounded(cmd, 30*time.Second)
	}
	s.registerCleanup(t)
	s.Start(t)
	return s
}

func (s *Prosody) config() string {
	q := luaString
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("-- generated by passerelle/cmd/internal/harness")
	w("run_as_root = true -- tests may run as uid 0; without this Prosody refuses to start and hangs on shutdown")
	w("pidfile = %s", q(filepath.Join(s.dir, "prosody.pid")))
	w("data_path = %s", q(filepath.Join(s.dir, "data")))
	w("certificates = %s", q(filepath.Join(s.dir, "certs")))
	w("plugin_paths = { }")
	w("log = { { levels = { min = %s }, to = \"file\", filename = %s } }", q(s.opts.LogLevel), q(s.logPath))
	w("interfaces = { \"127.0.0.1\" }")
	w("local_interfaces = { \"127.0.0.1\" }")
	w("component_interfaces = { \"127.0.0.1\" }")
	w("c2s_ports = { %d }", s.c2sPort)
	w("component_ports = { %d }", s.compPort)
	if s.opts.NoNagle {
		w("network_settings = { nagle = false }")
	}
	w("c2s_direct_tls_ports = { }")
	w("s2s_ports = { }")
	w("s2s_direct_tls_ports = { }")
	w("https_ports = { }")
	w("https_interfaces = { \"127.0.0.1\" }")
	if s.httpPort != 0 {
		w("http_ports = { %d }", s.httpPort)
		w("http_interfaces = { \"127.0.0.1\" }")
		w("http_external_url = %s", q(fmt.Sprintf("http://127.0.0.1:%d/", s.httpPort)))
	} else {
		w("http_ports = { }")
	}
	w("-- no \"tls\": without a certificate Prosody would offer STARTTLS and then fail it")
	modules := `"disco"; "roster"; "saslauth"; "register"; "ping"; "version"; "posix"; "offline"`
	if s.opts.MAM {
		modules += `; "mam"`
	}
	if s.opts.Carbons {
		modules += `; "carbons"`
	}
	w("modules_enabled = { %s }", modules)
	w("modules_disabled = { \"s2s\"; \"s2s_auth_certs\" }")
	w("authentication = \"internal_plain\"")
	w("storage = \"internal\"")
	w("allow_registration = true")
	w("min_seconds_between_registrations = 0")
	w("c2s_require_encryption = false")
	w("allow_unencrypted_plain_auth = true")
	if s.opts.C2SStanzaSizeLimit > 0 {
		w("c2s_stanza_size_limit = %d", s.opts.C2SStanzaSizeLimit)
	}
	if s.opts.MAM {
		w("archive_expires_after = \"never\"")
		w("default_archive_policy = true")
	}
	w("")
	for _, h := range append([]string{s.opts.Domain}, s.opts.ExtraHosts...) {
		w("VirtualHost %s", q(h))
	}
	if s.opts.Deploy {
		subst := map[string]string{
			"example.org":                s.opts.Domain,
			`"CHANGE-ME"`:                q(s.opts.Secret),
			"component_ports = { 5347 }": fmt.Sprintf("component_ports = { %d }", s.compPort),
		}
		if s.opts.DeployNoMessage {
			subst[` message = "outgoing";`] = ""
		}
		b.WriteString(deploySnippet("prosody.cfg.lua", subst))
	}
	for _, c := range s.opts.Components {
		if s.opts.Deploy {
			break
		}
		w("Component %s", q(c))
		w("\tcomponent_secret = %s", q(s.opts.Secret))
		w("\tcomponent_conflict_resolve = \"kick_old\" -- a restarted gateway replaces its stale session")
	}
	if s.httpPort != 0 {
		w("Component %s \"http_file_share\"", q(s.UploadDomain()))
		w("\thttp_host = \"127.0.0.1\"")
		w("\thttp_external_url = %s", q(fmt.Sprintf("http://127.0.0.1:%d/", s.httpPort)))
	}
	return b.String()
}

// deploySnippet returns the repository's deploy/<name> with each key of
// subst replaced by its value; it panics when a key is missing, so that a
// changed snippet breaks the tests that rely on it.
func deploySnippet(name string, subst map[string]string) string {
	_, self, _, _ := runtime.Caller(0)
	path := filepath.Join(filepath.Dir(self), "..", "..", "..", "deploy", name)
	b, err := os.ReadFile(path)
	if err != nil {
		panic(fmt.Sprintf("harness: reading the deploy snippet: %v", err))
	}
	out := string(b)
	for k, v := range subst {
		if !strings.Contains(out, k) {
			panic(fmt.Sprintf("harness: %s no longer contains %q", path, k))
		}
		out = strings.ReplaceAll(out, k, v)
	}
	return out + "\n"
}

// luaString quotes s as a Lua string literal.
func luaString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r < 0x20:
			fmt.Fprintf(&b, `\%d`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// ---------------------------------------------------------------- ejabberd

// Ejabberd is the Server returned by StartEjabberd.
type Ejabberd struct {
	xmppServer
	distPort int
	node     string
}

// StartEjabberd starts a throwaway ejabberd on loopback and waits until it
// is ready (~1-2 s). It is killed in t.Cleanup. The test is skipped when
// ejabberd is not installed (failed when $CI is set).
//
// Erlang distribution listens on a private loopback port (ERL_DIST_PORT),
// so no epmd is started; HOME is the server's directory, so the Erlang
// cookie is private too.
func StartEjabberd(t testing.TB, opts ServerOptions) Server {
	t.Helper()
	requireBinary(t, "ejabberdctl", "erl")
	opts.setDefaults()
	dir := t.TempDir()
	s := &Ejabberd{xmppServer: xmppServer{
		kind:     "ejabberd",
		opts:     opts,
		dir:      dir,
		c2sPort:  FreePort(t),
		compPort: FreePort(t),
		// In the foreground ejabberd logs everything to the console too
		// (logs/ejabberd.log has the same lines), plus the VM's own
		// messages: the console output is the log.
		logPath:     filepath.Join(dir, "console.log"),
		consolePath: filepath.Join(dir, "console.log"),
		stopComm:    "beam.smp",
	}}
	s.distPort = FreePort(t)
	s.node = fmt.Sprintf("ejabberd%d@localhost", s.distPort)
	s.readyAddrs = []string{s.C2SAddr()}
	if len(opts.Components) > 0 || opts.DeployInstances {
		s.readyAddrs = append(s.readyAddrs, s.ComponentAddr())
	}
	if opts.Upload {
		s.httpPort = FreePort(t)
		s.readyAddrs = append(s.readyAddrs, s.HTTPAddr())
	}
	for _, d := range []string{"logs", "spool", "upload"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	cfg := filepath.Join(dir, "ejabberd.yml")
	ctlCfg := filepath.Join(dir, "ejabberdctl.cfg")
	if err := os.WriteFile(cfg, []byte(s.config()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ctlCfg, []byte(s.ctlConfig()), 0o600); err != nil {
		t.Fatal(err)
	}
	// The Debian inetrc maps localhost to 127.0.0.1 for the node name.
	if b, err := os.ReadFile("/etc/ejabberd/inetrc"); err == nil {
		_ = os.WriteFile(filepath.Join(dir, "inetrc"), b, 0o600)
	}
	env := serverEnv(dir)
	ctl := func(args ...string) *exec.Cmd {
		base := []string{"--config-dir", dir, "--config", cfg, "--ctl-config", ctlCfg,
			"--logs", filepath.Join(dir, "logs"), "--spool", filepath.Join(dir, "spool")}
		cmd := exec.Command("ejabberdctl", append(base, args...)...)
		cmd.Dir, cmd.Env = dir, env
		return cmd
	}
	s.command = func() *exec.Cmd { return ctl("foreground") }
	s.addUser = func(user, host, password string) ([]byte, error) {
		return runBounded(ctl("register", user, host, password), 60*time.Second)
	}
	s.registerCleanup(t)
	s.Start(t)
	return s
}

// ctlConfig is sourced by ejabberdctl (a shell script).
func (s *Ejabberd) ctlConfig() string {
	return strings.Join([]string{
		"# generated by passerelle/cmd/internal/harness",
		"# run as the current user (root in CI) instead of su to 'ejabberd', which cannot write our temp dir",
		"EXEC_CMD=as_current_user",
		"# Erlang distribution on a fixed private port: no epmd",
		"ERL_DIST_PORT=" + strconv.Itoa(s.distPort),
		"ERLANG_NODE=" + s.node,
		`ERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0 -kernel inet_dist_use_interface {127,0,0,1}"`,
		"EJABBERD_BYPASS_WARNINGS=true",
		"",
	}, "\n")
}

func (s *Ejabberd) config() string {
	q := strconv.Quote // YAML double-quoted strings accept Go's escapes
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("# generated by passerelle/cmd/internal/harness")
	w("hosts:")
	for _, h := range append([]string{s.opts.Domain}, s.opts.ExtraHosts...) {
		w("  - %s", q(h))
	}
	w("loglevel: info")
	w("log_rotate_count: 0")
	w("hide_sensitive_log_data: false")
	w("language: en")
	w("auth_method: internal")
	w("auth_password_format: plain")
	w("registration_timeout: infinity # the default 600 s per-IP throttle breaks repeated registrations")
	w("s2s_access: none")
	w("listen:")
	w("  -")
	w("    port: %d", s.c2sPort)
	w("    ip: \"127.0.0.1\"")
	w("    module: ejabberd_c2s")
	w("    starttls: false")
	w("    starttls_required: false")
	w("    max_stanza_size: 262144")
	if s.httpPort != 0 {
		w("  -")
		w("    port: %d", s.httpPort)
		w("    ip: \"127.0.0.1\"")
		w("    module: ejabberd_http")
		w("    request_handlers:")
		w("      /upload: mod_http_upload")
	}
	if len(s.opts.Components) > 0 && !s.opts.DeployInstances {
		w("  -")
		w("    port: %d", s.compPort)
		w("    ip: \"127.0.0.1\"")
		w("    module: ejabberd_service")
		w("    access: all")
		w("    hosts:")
		for _, c := range s.opts.Components {
			w("      %s:", q(c))
			w("        password: %s", q(s.opts.Secret))
		}
	}
	w(`acl:
  local:
    user_regexp: ""
  loopback:
    ip:
      - 127.0.0.0/8
      - ::1/128
access_rules:
  local:
    allow: local
  c2s:
    allow: all
  register:
    allow: all
  trusted_network:
    allow: loopback
shaper_rules:
  max_user_offline_messages: 5000
api_permissions:
  "console commands":
    from:
      - ejabberd_ctl
    who: all
    what: "*"
modules:
  mod_disco: {}
  mod_roster: {}
  mod_ping: {}
  mod_version: {}
  mod_offline:
    access_max_user_messages: max_user_offline_messages
  mod_register:
    access: register
    ip_access: trusted_network`)
	if s.httpPort != 0 {
		// Loaded for every virtual host: upload.<host> each, all on the
		// same HTTP listener, told apart by @HOST@ in the URL.
		url := fmt.Sprintf("http://127.0.0.1:%d/upload/@HOST@", s.httpPort)
		w("  mod_http_upload:")
		w("    hosts: [\"upload.@HOST@\"]")
		w("    put_url: %s", q(url))
		w("    get_url: %s", q(url))
		w("    docroot: %s", q(filepath.Join(s.dir, "upload")))
		w("    access: all # components too, like Prosody")
		w("    max_size: 10485760")
		w("    thumbnail: false")
	}
	if s.opts.Deploy && !s.opts.DeployInstances {
		// The snippet's acl, access rules and modules, as shipped; its listener is the
		// one above, on a free port.
		snippet := filepath.Join(s.dir, "deploy-ejabberd.yml")
		body := deploySnippet("ejabberd.yml", map[string]string{"example.org": s.opts.Domain})
		if err := os.WriteFile(snippet, []byte(body), 0o600); err != nil {
			panic(fmt.Sprintf("harness: writing the deploy snippet: %v", err))
		}
		w("include_config_file:")
		w("  %s:", q(snippet))
		w("    allow_only: [acl, access_rules, modules]")
	}
	if s.opts.DeployInstances {
		// The snippet's listener (on a free port), its domain_balancing,
		// acl, access rules and modules, as shipped.
		snippet := filepath.Join(s.dir, "deploy-ejabberd-instances.yml")
		body := deploySnippet("ejabberd-instances.yml", map[string]string{
			"example.org": s.opts.Domain,
			"port: 5347":  fmt.Sprintf("port: %d", s.compPort),
			`"CHANGE-ME"`: q(s.opts.Secret),
		})
		if err := os.WriteFile(snippet, []byte(body), 0o600); err != nil {
			panic(fmt.Sprintf("harness: writing the deploy snippet: %v", err))
		}
		w("include_config_file:")
		w("  %s:", q(snippet))
		w("    allow_only: [listen, domain_balancing, acl, access_rules, modules]")
	}
	return b.String()
}

// runBounded runs cmd, returning its combined output; it is killed (with
// its process group) after timeout.
func runBounded(cmd *exec.Cmd, timeout time.Duration) ([]byte, error) {
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	p, err := startProc(filepath.Base(cmd.Path), cmd)
	if err != nil {
		return nil, err
	}
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.kill()
		return out.Bytes(), fmt.Errorf("%s timed out after %v", p.name, timeout)
	}
	if p.waitErr != nil {
		return out.Bytes(), p.waitErr
	}
	return out.Bytes(), nil
}
