// Command sms-sandbox stands in for a Twilio-compatible SMS provider on
// loopback, for trying the SMS bridge without an account: every text the
// gateway sends, to any number, is logged (and reported delivered), and a
// text "from" any phone number is sent to the gateway's webhook, signed as
// the real provider signs them:
//
//	curl -d from=15557654321 -d to=15550001111 -d body=hello http://127.0.0.1:8088/send
//
// Point the gateway at it with PASSERELLE_SMS_API_URL=http://<listen>,
// the same PASSERELLE_SMS_ACCOUNT_SID and PASSERELLE_SMS_AUTH_TOKEN, and
// give -webhook the gateway's PASSERELLE_SMS_WEBHOOK_URL.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"passerelle/bridges/sms/sandbox"
)

func main() { os.Exit(run()) }

func run() int {
	flags := flag.NewFlagSet("sms-sandbox", flag.ContinueOnError)
	listen := flags.String("listen", "127.0.0.1:8088", "address of the provider API and of /send")
	sid := flags.String("account-sid", "ACsandbox", "account SID the gateway authenticates with (PASSERELLE_SMS_ACCOUNT_SID)")
	token := flags.String("auth-token", "sandbox-token", "auth token: the gateway's password and the webhook signature key (PASSERELLE_SMS_AUTH_TOKEN)")
	webhook := flags.String("webhook", "", "the gateway's PASSERELLE_SMS_WEBHOOK_URL, where inbound texts and delivery reports go")
	if err := flags.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *webhook == "" {
		fmt.Fprintln(os.Stderr, "sms-sandbox: -webhook is required (the gateway's PASSERELLE_SMS_WEBHOOK_URL)")
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "sms-sandbox: %v\n", err)
		return 1
	}
	s := &server{p: sandbox.New(*sid, *token), webhook: strings.TrimRight(*webhook, "/"), log: log}
	s.p.OnText = s.sent
	mux := http.NewServeMux()
	mux.Handle("/2010-04-01/", s.p)
	mux.HandleFunc("POST /send", s.send)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	log.Info("SMS sandbox listening", "api", "http://"+ln.Addr().String(), "send", "http://"+ln.Addr().String()+"/send", "webhook", s.webhook)
	err = srv.Serve(ln)
	s.reports.Wait()
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintf(os.Stderr, "sms-sandbox: %v\n", err)
		return 1
	}
	return 0
}

type server struct {
	p       *sandbox.Provider
	webhook string
	log     *slog.Logger
	reports sync.WaitGroup // delivery reports being posted
}

// sent logs a text the gateway sent and reports it delivered, as the
// provider's status callback does.
func (s *server) sent(r sandbox.Request) {
	s.log.Info("text sent", "from", r.From(), "to", r.To(), "body", r.Body(), "sid", r.SID, "status", r.Status)
	if r.SID == "" || r.StatusCallback() == "" {
		return
	}
	s.reports.Go(func() {
		code, body, err := s.p.Status("", r.StatusCallback(), sandbox.StatusParams(r.SID, "delivered", ""))
		if err != nil || code/100 != 2 {
			s.log.Warn("the gateway did not take the delivery report", "sid", r.SID, "status", code, "answer", body, "err", err)
		}
	})
}

// send posts an inbound text, form fields from, to and body, to the
// gateway's webhook and answers with the gateway's answer.
func (s *server) send(w http.ResponseWriter, r *http.Request) {
	from, to, body := number(r.FormValue("from")), number(r.FormValue("to")), r.FormValue("body")
	if from == "+" || to == "+" || body == "" {
		http.Error(w, "from, to and body are required", http.StatusBadRequest)
		return
	}
	sid := fmt.Sprintf("SMsandbox%d", time.Now().UnixNano())
	code, answer, err := s.p.Inbound("", s.webhook, sandbox.InboundParams(sid, from, to, body))
	if err != nil {
		s.log.Warn("cannot reach the gateway's webhook", "url", s.webhook, "err", err)
		http.Error(w, "cannot reach the gateway: "+err.Error(), http.StatusBadGateway)
		return
	}
	s.log.Info("text received", "from", from, "to", to, "body", body, "sid", sid, "gateway_status", code)
	if code/100 != 2 {
		http.Error(w, fmt.Sprintf("the gateway answered %d: %s", code, answer), http.StatusBadGateway)
		return
	}
	fmt.Fprintf(w, "sent %s from %s to %s\n", sid, from, to)
}

// number returns a phone number in E.164 form, with its "+": in a form
// posted with curl -d, "+1555…" arrives as " 1555…".
func number(s string) string {
	return "+" + strings.TrimLeft(strings.TrimSpace(s), "+")
}
