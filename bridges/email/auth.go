package email

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"blitiri.com.ar/go/spf"
	"github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"
	"github.com/emersion/go-msgauth/authres"
	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-msgauth/dmarc"
	"github.com/emersion/go-smtp"
	"golang.org/x/net/publicsuffix"
)

// unverifiedMark is the first line of a mail whose sender the gateway could
// not authenticate.
const unverifiedMark = "⚠ unverified sender"

var errDMARCReject = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1},
	Message: "Message rejected: the sender's domain (DMARC policy) says it is not from them"}

// Resolver answers the DNS questions of sender authentication (SPF, DKIM
// and DMARC records). A *net.Resolver is one; tests give their own.
type Resolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
	LookupAddr(ctx context.Context, addr string) ([]string, error)
}

// NewResolver returns a resolver that asks the DNS server at addr
// (host:port), or the system's resolver when addr is empty.
func NewResolver(addr string) *net.Resolver {
	if addr == "" {
		return net.DefaultResolver
	}
	var d net.Dialer
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return d.DialContext(ctx, network, addr)
	}}
}

// authTimeout bounds the DNS work of one mail's sender checks.
const authTimeout = 20 * time.Second

// maxDKIMSignatures bounds the signatures verified per mail.
const maxDKIMSignatures = 5

// senderVerdict is what the gateway concluded about a mail's From address.
type senderVerdict struct {
	verified bool   // DMARC pass: the From domain vouches for the mail
	reject   bool   // the From domain's DMARC policy says reject
	detail   string // for the log, e.g. "spf=fail dkim=none dmarc=fail p=reject"
}

// checkSender authenticates the From address of a mail received directly
// from the client at ip: SPF of the envelope sender (or of the HELO name for
// a null sender), DKIM signatures, and DMARC alignment of both with the From
// domain and that domain's policy. With a trusted authserv-id it reads the
// fronting MTA's Authentication-Results instead and looks nothing up.
func (b *Bridge) checkSender(ctx context.Context, ip net.IP, helo, mailFrom string, raw []byte) senderVerdict {
	hdr, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(raw)))
	if err != nil {
		return senderVerdict{detail: "unreadable header"}
	}
	if id := b.opts.Inbound.TrustedAuthServ; id != "" {
		return trustedVerdict(hdr, id)
	}
	fromDomain, err := singleFromDomain(hdr)
	if err != nil {
		return senderVerdict{detail: "dmarc=permerror (" + err.Error() + ")"}
	}
	ctx, cancel := context.WithTimeout(ctx, authTimeout)
	defer cancel()
	res := b.opts.Inbound.Resolver
	lookupTXT := func(name string) ([]string, error) { return res.LookupTXT(ctx, name) }

	spfDomain := domainOf(mailFrom)
	if spfDomain == "" {
		spfDomain = helo
	}
	spfResult, _ := spf.CheckHostWithSender(ip, helo, mailFrom, spf.WithResolver(res), spf.WithContext(ctx))

	var dkimDomains []string // domains of the valid signatures
	verifs, _ := dkim.VerifyWithOptions(bytes.NewReader(raw), &dkim.VerifyOptions{LookupTXT: lookupTXT, MaxVerifications: maxDKIMSignatures})
	dkimResult := "none"
	for _, v := range verifs {
		if v.Err == nil {
			dkimDomains = append(dkimDomains, v.Domain)
			dkimResult = "pass"
		} else if dkimResult == "none" {
			dkimResult = "fail"
		}
	}

	rec, policyDomain, err := lookupDMARC(fromDomain, lookupTXT)
	v := senderVerdict{}
	dkimMode, spfMode := dmarc.AlignmentMode(dmarc.AlignmentRelaxed), dmarc.AlignmentMode(dmarc.AlignmentRelaxed)
	if rec != nil {
		if rec.DKIMAlignment != "" {
			dkimMode = rec.DKIMAlignment
		}
		if rec.SPFAlignment != "" {
			spfMode = rec.SPFAlignment
		}
	}
	for _, d := range dkimDomains {
		if aligned(d, fromDomain, dkimMode) {
			v.verified = true
		}
	}
	if spfResult == spf.Pass && aligned(spfDomain, fromDomain, spfMode) {
		v.verified = true
	}
	dmarcResult := "fail"
	switch {
	case v.verified:
		dmarcResult = "pass"
	case err != nil && dmarc.IsTempFail(err):
		dmarcResult = "temperror"
	case rec == nil:
		dmarcResult = "none"
	}
	v.detail = fmt.Sprintf("spf=%s dkim=%s dmarc=%s header.from=%s", spfResult, dkimResult, dmarcResult, fromDomain)
	if rec != nil && !v.verified {
		// The record's pct is not applied: a failing mail always gets the
		// policy (DMARCbis drops pct too).
		p := rec.Policy
		if policyDomain != fromDomain && rec.SubdomainPolicy != "" {
			p = rec.SubdomainPolicy
		}
		v.reject = p == dmarc.PolicyReject
		v.detail += " p=" + string(p)
	}
	return v
}

// lookupDMARC returns the DMARC record for domain: its own, else that of
// its organizational domain, and the domain it was found at. err is
// dmarc.ErrNoPolicy when there is none, or a lookup failure.
func lookupDMARC(domain string, lookupTXT func(string) ([]string, error)) (*dmarc.Record, string, error) {
	opts := &dmarc.LookupOptions{LookupTXT: lookupTXT}
	rec, err := dmarc.LookupWithOptions(domain, opts)
	if errors.Is(err, dmarc.ErrNoPolicy) {
		if org := orgDomain(domain); org != domain {
			rec, err = dmarc.LookupWithOptions(org, opts)
			return rec, org, err
		}
	}
	return rec, domain, err
}

// trustedVerdict reads the first Authentication-Results field of the
// trusted authserv-id (the fronting MTA adds its own on top and removes
// older ones claiming its name); fields of any other authserv-id are
// ignored. Only a DMARC pass for the From domain verifies the sender: the
// MTA is trusted to have applied reject policies itself.
func trustedVerdict(hdr textproto.Header, authserv string) senderVerdict {
	fromDomain, err := singleFromDomain(hdr)
	if err != nil {
		return senderVerdict{detail: "dmarc=permerror (" + err.Error() + ")"}
	}
	fields := hdr.FieldsByKey("Authentication-Results")
	for fields.Next() {
		id, results, err := authres.Parse(fields.Value())
		if err != nil || !strings.EqualFold(id, authserv) {
			continue
		}
		for _, r := range results {
			if d, ok := r.(*authres.DMARCResult); ok && d.Value == authres.ResultPass &&
				(d.From == "" || strings.EqualFold(d.From, fromDomain)) {
				return senderVerdict{verified: true, detail: "dmarc=pass by " + authserv}
			}
		}
		return senderVerdict{detail: "no dmarc=pass by " + authserv}
	}
	return senderVerdict{detail: "no Authentication-Results by " + authserv}
}

// singleFromDomain returns the domain of the From address; a mail with
// several From fields or addresses has no single domain to authenticate.
func singleFromDomain(hdr textproto.Header) (string, error) {
	var n int
	for f := hdr.FieldsByKey("From"); f.Next(); {
		n++
	}
	if n != 1 {
		return "", fmt.Errorf("%d From fields", n)
	}
	mh := mail.Header{Header: message.Header{Header: hdr}}
	list, err := mh.AddressList("From")
	var addr string
	switch {
	case err == nil && len(list) == 1:
		addr = list[0].Address
	case err == nil:
		return "", fmt.Errorf("%d From addresses", len(list))
	default:
		addr = bareAddress(hdr.Get("From"))
	}
	d := domainOf(addr)
	if d == "" {
		return "", errors.New("no From domain")
	}
	return d, nil
}

// domainOf returns the lower-case domain of addr ("" when it has none).
func domainOf(addr string) string {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return ""
	}
	return strings.TrimSuffix(strings.ToLower(addr[at+1:]), ".")
}

// aligned tells whether identifier domain d is aligned with the From
// domain: the same (strict) or the same organizational domain (relaxed).
func aligned(d, from string, mode dmarc.AlignmentMode) bool {
	d = strings.TrimSuffix(strings.ToLower(d), ".")
	if d == "" {
		return false
	}
	if mode == dmarc.AlignmentStrict {
		return d == from
	}
	return orgDomain(d) == orgDomain(from)
}

// orgDomain returns the organizational domain of d: its registrable
// domain by the public suffix list.
func orgDomain(d string) string {
	if o, err := publicsuffix.EffectiveTLDPlusOne(d); err == nil {
		return o
	}
	return d
}
