package sms

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"passerelle/bridges"
	"passerelle/component/stanza"
	"passerelle/component/xmlel"
	"passerelle/mapping"
	"passerelle/store"
)

const (
	// maxWebhookBody bounds a webhook request's body.
	maxWebhookBody = 64 << 10
	inboundPath    = "/sms/inbound"
	statusPath     = "/sms/status"
	emptyTwiML     = `<?xml version="1.0" encoding="UTF-8"?><Response/>`
)

// serveWebhooks answers the provider's webhooks on ln until ctx is done,
// then lets the webhooks being answered finish for shutdownWait. Those
// still running then are cut off: their context is cancelled (the store's
// calls return with it) and their connections closed. It returns once no
// handler runs and none can start, so that nothing touches the store after.
func (b *Bridge) serveWebhooks(ctx context.Context, ln net.Listener) {
	reqCtx, cutOff := context.WithCancel(context.WithoutCancel(ctx))
	defer cutOff()
	var running sync.RWMutex
	srv := &http.Server{Handler: whileRunning(&running, b.webhookHandler()), ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute,
		BaseContext: func(net.Listener) context.Context { return reqCtx }}
	shut := make(chan struct{})
	go func() {
		defer close(shut)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), b.shutdownWait)
		defer cancel()
		if srv.Shutdown(sctx) != nil { // waits for the webhooks being answered
			b.host.Log().Warn("SMS webhooks still being answered after the shutdown wait were cut off; the provider retries them",
				"wait", b.shutdownWait)
			cutOff()
			srv.Close()
		}
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		b.host.Log().Error("SMS webhook listener failed", "err", err)
	}
	<-shut
	running.Lock()
}

// whileRunning serves h under a read lock of running: the stop takes it
// for writing, which waits for the handlers and lets none start after
// (those answer 503, and the provider retries them).
func whileRunning(running *sync.RWMutex, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !running.TryRLock() {
			unavailable(w)
			return
		}
		defer running.RUnlock()
		h.ServeHTTP(w, r)
	})
}

// webhookHandler serves the webhooks both at the public URL's path and at
// the root (for a proxy that strips the prefix).
func (b *Bridge) webhookHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(inboundPath, b.handleInbound)
	mux.HandleFunc(statusPath, b.handleStatus)
	if u, err := url.Parse(b.opts.WebhookURL); err == nil && strings.Trim(u.Path, "/") != "" {
		prefix := "/" + strings.Trim(u.Path, "/")
		mux.HandleFunc(prefix+inboundPath, b.handleInbound)
		mux.HandleFunc(prefix+statusPath, b.handleStatus)
	}
	return mux
}

// signedForm reads a webhook's form and checks its X-Twilio-Signature
// against the public URL of path. It answers the request itself (and
// returns nil) when the request is refused.
func (b *Bridge) signedForm(w http.ResponseWriter, r *http.Request, path string) url.Values {
	log := b.host.Log()
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return nil
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxWebhookBody)
	if err := r.ParseForm(); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			log.Warn("refused an oversize SMS webhook", "path", path, "remote", r.RemoteAddr, "limit", maxWebhookBody)
			http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
			return nil
		}
		log.Warn("refused an unreadable SMS webhook", "path", path, "remote", r.RemoteAddr, "err", err)
		http.Error(w, "bad form", http.StatusBadRequest)
		return nil
	}
	public := b.opts.WebhookURL + path
	if r.URL.RawQuery != "" {
		public += "?" + r.URL.RawQuery
	}
	if !validSignature(b.opts.AuthToken, public, r.PostForm, r.Header.Get("X-Twilio-Signature")) {
		log.Warn("refused an SMS webhook with a bad or missing signature", "path", path, "remote", r.RemoteAddr,
			"signed", r.Header.Get("X-Twilio-Signature") != "")
		http.Error(w, "bad signature", http.StatusForbidden)
		return nil
	}
	return r.PostForm
}

// handleInbound takes an inbound text: 200 only once it is committed
// (to the XMPP outbox, or to sms_unclaimed).
func (b *Bridge) handleInbound(w http.ResponseWriter, r *http.Request) {
	form := b.signedForm(w, r, inboundPath)
	if form == nil {
		return
	}
	log := b.host.Log()
	in, err := parseInbound(form, b.opts.Region)
	if err != nil {
		log.Warn("refused a malformed inbound text", "err", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if !slices.Contains(b.opts.Numbers, in.To) {
		log.Warn("refused an inbound text for a number that is not the gateway's", "to", in.To, "from", in.From, "sid", in.SID)
		http.Error(w, "unknown number", http.StatusNotFound)
		return
	}
	ctx := r.Context()
	if err := b.deliverInbound(ctx, in); err != nil {
		log.Error("cannot take an inbound text; the provider will retry", "sid", in.SID, "err", err)
		unavailable(w)
		return
	}
	w.Header().Set("Content-Type", "text/xml")
	w.Write([]byte(emptyTwiML))
}

// unavailable answers a webhook the gateway cannot take now (the store
// cannot commit it): 503, so that the provider retries it later.
func unavailable(w http.ResponseWriter) {
	w.Header().Set("Retry-After", "60")
	http.Error(w, "temporary failure", http.StatusServiceUnavailable)
}

// inboundExtra marks the message_ids rows of inbound texts (the migration
// to store version 8 reads it).
const inboundExtra = `{"in":true}`

// deliverInbound commits an inbound text for its number's owner, or keeps
// it when nobody has claimed the number.
func (b *Bridge) deliverInbound(ctx context.Context, in *Inbound) error {
	st, domain, log := b.host.Store(), b.host.Domain(), b.host.Log()
	owner, err := st.ClaimOwner(ctx, domain, in.To)
	if errors.Is(err, store.ErrNotFound) {
		if err := b.keepUnclaimed(ctx, in); err != nil {
			return err
		}
		log.Warn("kept an inbound text for a number nobody has claimed", "to", in.To, "from", in.From, "sid", in.SID)
		return nil
	}
	if err != nil {
		return err
	}
	// The provider sends a text again when it got no 200, and may send it
	// twice at once: its MessageSid, the message and its link are committed
	// together, once.
	from := mapping.EscapeLocal(in.From) + "@" + domain
	link := store.MessageID{Domain: domain, JID: owner, XMPPID: in.SID, ForeignID: in.SID, Peer: in.From, Extra: inboundExtra}
	ok, err := b.host.Deliver(ctx, in.SID, []store.MessageID{link}, inboundMessage(from, owner, in))
	if err != nil {
		return err
	}
	if !ok {
		log.Info("ignored a repeated inbound text", "sid", in.SID, "user", owner)
		return nil
	}
	log.Debug("inbound text", "user", owner, "from", in.From, "sid", in.SID, "media", len(in.Media))
	b.host.Contact(ctx, owner, mapping.EscapeLocal(in.From), in.From)
	return nil
}

// inboundMessage renders an inbound text as a chat message: the media as
// XEP-0066 links, and in the body for clients without XEP-0066.
func inboundMessage(from, to string, in *Inbound) *xmlel.Element {
	body := in.Body
	for _, u := range in.Media {
		if body != "" {
			body += "\n"
		}
		body += u
	}
	m := stanza.Message(from, to, "chat", in.SID, body)
	for _, u := range in.Media {
		m.Add(xmlel.New(stanza.NSOOB, "x").Add(xmlel.New(stanza.NSOOB, "url").WithText(u)))
	}
	return m
}

// handleStatus turns the provider's delivery reports into XEP-0184
// receipts and error stanzas.
func (b *Bridge) handleStatus(w http.ResponseWriter, r *http.Request) {
	form := b.signedForm(w, r, statusPath)
	if form == nil {
		return
	}
	log := b.host.Log()
	s, err := parseStatus(form)
	if err != nil {
		log.Warn("refused a malformed status callback", "err", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if err := b.applyStatus(r.Context(), s); err != nil {
		log.Error("cannot apply a status callback; the provider will retry", "sid", s.SID, "err", err)
		unavailable(w)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (b *Bridge) applyStatus(ctx context.Context, s *Status) error {
	log, domain := b.host.Log(), b.host.Domain()
	if s.Status != "delivered" && s.Status != "failed" && s.Status != "undelivered" {
		log.Debug("text status", "sid", s.SID, "status", s.Status)
		return nil
	}
	m, err := b.host.Store().MessageByForeignID(ctx, domain, s.SID)
	if errors.Is(err, store.ErrNotFound) {
		// The report may come before the provider's answer to the send:
		// keep it for the worker, then look again in case the answer came
		// meanwhile (whoever takes the kept report applies it).
		log.Info("status callback for a text not known yet; kept", "sid", s.SID, "status", s.Status)
		if err := b.keepEarlyStatus(ctx, s); err != nil {
			return err
		}
		if m, err = b.host.Store().MessageByForeignID(ctx, domain, s.SID); errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if s, err = b.takeEarlyStatus(ctx, s.SID); err != nil || s == nil {
			return err
		}
	}
	if err != nil {
		return err
	}
	return b.applyKnownStatus(ctx, m, s)
}

// applyKnownStatus reports a delivery status of the text m to its sender;
// a failure, which may come long after the text was sent, also as a
// notice at the sender's bare JID.
func (b *Bridge) applyKnownStatus(ctx context.Context, m *store.MessageID, s *Status) error {
	log, domain := b.host.Log(), b.host.Domain()
	var x sent
	if err := json.Unmarshal([]byte(m.Extra), &x); err != nil || x.User == "" {
		log.Info("status callback for a text that is not an outbound one", "sid", s.SID, "status", s.Status)
		return nil
	}
	contact := mapping.EscapeLocal(m.Peer) + "@" + domain
	// The provider repeats a report it got no 200 for, maybe at once: each
	// status of a text is reported once.
	key := s.SID + " " + s.Status
	switch s.Status {
	case "delivered":
		if !x.Receipt || x.Part != x.Parts {
			return nil
		}
		rc := stanza.New("message", contact, x.User, "", stanza.NewID())
		rc.Add(xmlel.New(stanza.NSReceipts, "received").SetAttr("id", x.ID))
		ok, err := b.host.Deliver(ctx, key, nil, rc)
		if err == nil {
			logStatus(ctx, log, ok, "text delivered", slog.LevelDebug, s, m)
		}
		return err
	default:
		text := "The text to " + m.Peer + " was not delivered (" + s.Status
		if s.ErrorCode != "" {
			text += ", error " + s.ErrorCode
		}
		if s.ErrorMessage != "" {
			text += ": " + s.ErrorMessage
		}
		text += ")."
		if x.Parts > 1 {
			text = strings.Replace(text, "The text", "Part "+itoa(x.Part)+" of "+itoa(x.Parts)+" of the text", 1)
		}
		e := stanza.Errorf("recipient-unavailable", text)
		e.Type = "cancel"
		ok, err := bridges.ReportFailureOnce(ctx, b.host, key, contact, x.User, x.ID, e, "")
		if err == nil {
			logStatus(ctx, log, ok, "text not delivered", slog.LevelInfo, s, m, "code", s.ErrorCode)
		}
		return err
	}
}

// logStatus logs a report applied (at level) or, when it was applied
// before, its repetition.
func logStatus(ctx context.Context, log *slog.Logger, applied bool, msg string, level slog.Level, s *Status, m *store.MessageID, attrs ...any) {
	if !applied {
		msg, level = "ignored a repeated status callback", slog.LevelInfo
	}
	log.Log(ctx, level, msg, append([]any{"sid", s.SID, "status", s.Status, "user", m.JID, "to", m.Peer}, attrs...)...)
}
