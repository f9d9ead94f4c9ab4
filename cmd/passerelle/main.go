// Command passerelle is an XMPP gateway to IRC, email and SMS. It runs beside
// an XMPP server as one XEP-0114 component per bridge, configured only by
// PASSERELLE_* environment variables (passerelle -h lists them).
//
// Exit codes: 0 after a clean shutdown on SIGTERM/SIGINT, 2 for bad
// configuration, 1 for other fatal errors.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"passerelle/bridges"
	"passerelle/bridges/email"
	"passerelle/bridges/irc"
	"passerelle/bridges/sms"
	"passerelle/component"
	"passerelle/config"
	"passerelle/store"
)

func main() {
	os.Exit(run())
}

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "0.1.0-dev"
}

func run() int {
	flags := flag.NewFlagSet("passerelle", flag.ContinueOnError)
	flags.Usage = func() {
		fmt.Fprintf(flags.Output(), "Passerelle %s: an XMPP gateway to IRC, email and SMS.\n\n", version())
		fmt.Fprintf(flags.Output(), "Usage: passerelle  (configured by environment variables only)\n\n")
		config.Usage(flags.Output())
	}
	flags.SetOutput(os.Stdout)
	if err := flags.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	setProcs()
	cfg, err := config.Load()
	if err != nil {
		fmt.Fprintf(os.Stderr, "passerelle: bad configuration: %v\n", err)
		return 2
	}
	log := slog.New(cancelledAtDebug{slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel})})
	for _, v := range config.Unknown(os.Environ()) {
		log.Warn("unknown variable ignored", "variable", v)
	}

	st, err := store.Open(cfg.DB)
	if err != nil {
		fmt.Fprintf(os.Stderr, "passerelle: %v\n", err)
		return 1
	}
	defer st.Close()
	sealer, code := openSealer(st, cfg, log)
	if sealer == nil {
		return code
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	inst := component.NewInstance(st, log)
	if err := inst.Join(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "passerelle: %v\n", err)
		return 1
	}

	metrics := component.NewMetrics()
	group := component.NewGroup()
	var comps []*component.Component
	add := func(domain, domainVar string, b bridges.Bridge) {
		comps = append(comps, component.New(component.Options{
			Domain: domain, DomainVariable: domainVar, Addr: cfg.XMPPAddr, Secret: cfg.XMPPSecret,
			Bridge: b, Store: st, Sealer: sealer,
			IsAdmin: cfg.IsAdmin, Allowed: cfg.Allowed,
			RetryMaxDelay: cfg.RetryMaxDelay, Version: version(),
			Log: log, Metrics: metrics, Group: group, Instance: inst,
		}))
	}
	if cfg.IRCDomain != "" {
		add(cfg.IRCDomain, "PASSERELLE_IRC_DOMAIN", irc.New(irc.Options{AllowPrivate: cfg.IRCAllowPrivate, Sealer: sealer, PresencePoll: cfg.IRCPresencePoll}))
	}
	if cfg.EmailDomain != "" {
		add(cfg.EmailDomain, "PASSERELLE_EMAIL_DOMAIN", email.New(email.Options{Domain: cfg.EmailDomain, Listen: cfg.SMTPListen,
			Relay: cfg.SMTPRelay, MaxSize: cfg.SMTPMaxSize, MaxConnsPerClient: cfg.SMTPMaxConnectionsPerIP,
			AllowPrivate: cfg.MailboxAllowPrivate, Insecure: &metrics.For(cfg.EmailDomain).Insecure,
			Inbound: email.InboundOptions{MaxConns: cfg.SMTPMaxConnections, Timeout: cfg.SMTPTimeout,
				Resolver: email.NewResolver(cfg.DNSResolver), TrustedAuthServ: cfg.SMTPTrustedAuthserv}}))
	}
	if cfg.SMSDomain != "" {
		add(cfg.SMSDomain, "PASSERELLE_SMS_DOMAIN", sms.New(sms.Options{Numbers: cfg.SMSNumbers, Region: cfg.SMSRegion,
			APIURL: cfg.SMSAPIURL, AccountSID: cfg.SMSAccountSID, AuthToken: cfg.SMSAuthToken,
			WebhookListen: cfg.SMSWebhookListen, WebhookURL: cfg.SMSWebhookURL}))
	}

	if cfg.HTTPListen != "" {
		srv, err := serveHTTP(cfg.HTTPListen, st, comps, metrics, inst, log)
		if err != nil {
			fmt.Fprintf(os.Stderr, "passerelle: PASSERELLE_HTTP_LISTEN: %v\n", err)
			return 1
		}
		defer srv.Close()
	}

	log.Info("starting", "version", version(), "domains", cfg.Domains(), "xmpp", cfg.XMPPAddr, "allow", cfg.AllowDefault(), "procs", runtime.GOMAXPROCS(0))
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go releaseWhenIdle(runCtx)
	var maintenance sync.WaitGroup
	maintenance.Go(func() { pruneMessageIDs(runCtx, st, log, pruneEvery, messageIDsKept) })
	// The lease is renewed until the components stopped; then the
	// instance's record goes, and what it held is free for the others.
	instCtx, endInstance := context.WithCancel(context.Background())
	defer endInstance()
	instDone := make(chan struct{})
	go func() { defer close(instDone); inst.Run(instCtx) }()
	var wg sync.WaitGroup
	errs := make(chan error, len(comps))
	for _, c := range comps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.Run(runCtx); err != nil {
				errs <- fmt.Errorf("%s: %w", c.Domain(), err)
				cancel() // one fatal component stops the others cleanly
			}
		}()
	}
	wg.Wait() // each component returns once its bridge's Run returned (IRC QUIT lines, mail in progress)
	cancel()
	maintenance.Wait()
	endInstance()
	<-instDone
	close(errs)
	if err, ok := <-errs; ok {
		log.Error("fatal", "err", err)
		fmt.Fprintf(os.Stderr, "passerelle: %v\n", err)
		return 1
	}
	log.Info("stopped cleanly")
	return 0
}

// openSealer checks PASSERELLE_STORE_KEY against the database and re-seals
// the secrets stored by the previous version; without a Sealer it returns
// the exit code: 2 for a wrong or missing key, 1 for a failing database.
func openSealer(st *store.Store, cfg *config.Config, log *slog.Logger) (*store.Sealer, int) {
	start := time.Now()
	sealer, rep, err := st.OpenSealer(context.Background(), cfg.StoreKey, cfg.IRCDomain)
	if errors.Is(err, store.ErrWrongKey) {
		fmt.Fprintf(os.Stderr, "passerelle: bad configuration: %v\n", err)
		return nil, 2
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "passerelle: %v\n", err)
		return nil, 1
	}
	if cfg.StoreKey == "" {
		log.Warn("PASSERELLE_STORE_KEY is not set: foreign passwords are stored in clear in the database", "db", store.Redact(cfg.DB))
	} else {
		log.Info("stored secrets are sealed", "kdf", rep.KDF, "new_key", rep.Created, "took", time.Since(start).Round(time.Millisecond))
	}
	if rep.Resealed > 0 {
		log.Info("stored secrets of the previous format re-sealed, bound to their user and field", "values", rep.Resealed)
	}
	for _, v := range rep.Kept {
		log.Warn("a stored secret of the previous format does not open with PASSERELLE_STORE_KEY: kept as it was", "secret", v)
	}
	return sealer, 0
}

// serveHTTP serves /healthz (200 when the database can commit a write and
// every component stream is up, 503 with the reason otherwise) and
// Prometheus /metrics.
func serveHTTP(addr string, st *store.Store, comps []*component.Component, m *component.Metrics, inst *component.Instance, log *slog.Logger) (*http.Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	probe := &writeProbe{st: st}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if err := probe.check(r.Context()); err != nil {
			http.Error(w, "database: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		for _, c := range comps {
			if !c.Connected() {
				http.Error(w, c.Domain()+": not connected to the XMPP server", http.StatusServiceUnavailable)
				return
			}
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		m.WritePrometheus(w)
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		inst.WritePrometheus(ctx, w)
	})
	if loopback(ln.Addr()) {
		// Profiles (go tool pprof, go tool trace) on a listener only this
		// machine reaches: they show the gateway's workings.
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("HTTP listener failed", "err", err)
		}
	}()
	log.Info("HTTP listening", "addr", ln.Addr().String())
	return srv, nil
}

// loopback reports whether a is a loopback address.
func loopback(a net.Addr) bool {
	t, ok := a.(*net.TCPAddr)
	return ok && t.IP.IsLoopback()
}

// writeProbe checks that the store can commit, at most once a second
// however often /healthz is asked: callers within that second share the
// last outcome.
type writeProbe struct {
	st   *store.Store
	mu   sync.Mutex
	last time.Time
	err  error
}

const probeEvery = time.Second

func (p *writeProbe) check(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.last.IsZero() && time.Since(p.last) < probeEvery {
		return p.err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	p.err, p.last = p.st.CheckWrite(ctx), time.Now()
	return p.err
}
