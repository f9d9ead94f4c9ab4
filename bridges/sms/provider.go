package sms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Provider sends texts through an SMS provider's API.
type Provider interface {
	// Send hands one text to the provider and returns the provider's id
	// for it (the message SID). Errors are *ProviderError when the
	// provider answered; others (network, timeout) are temporary.
	Send(ctx context.Context, t Text) (sid string, err error)
}

// Text is one outbound text as the provider takes it.
type Text struct {
	From, To, Body string
	Media          []string // URLs of attachments (MMS)
	StatusCallback string   // where the provider reports delivery
}

// ProviderError is a refusal by the provider's API.
type ProviderError struct {
	Status  int    // HTTP status
	Code    int    // provider error code, 0 if none
	Message string // the provider's text
}

func (e *ProviderError) Error() string {
	s := fmt.Sprintf("provider answered %d", e.Status)
	if e.Code != 0 {
		s += fmt.Sprintf(" (code %d)", e.Code)
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Temporary reports whether trying again later may succeed: 5xx, 429 and
// 408 are temporary, other refusals are permanent.
func (e *ProviderError) Temporary() bool {
	return e.Status >= 500 || e.Status == http.StatusTooManyRequests || e.Status == http.StatusRequestTimeout
}

// temporary reports whether err from Provider.Send is worth a retry.
func temporary(err error) bool {
	var pe *ProviderError
	if errors.As(err, &pe) {
		return pe.Temporary()
	}
	return true // network failures, timeouts: the provider did not answer
}

// maxAPIResponse bounds what is read of a provider's answer.
const maxAPIResponse = 64 << 10

// Twilio is a provider speaking Twilio's REST API (2010-04-01), or any
// compatible one.
type Twilio struct {
	BaseURL    string // e.g. https://api.twilio.com, no trailing slash
	AccountSID string
	AuthToken  string
	Client     *http.Client
}

// NewTwilio returns a Twilio provider with a 30 s request timeout.
func NewTwilio(baseURL, sid, token string) *Twilio {
	return &Twilio{BaseURL: strings.TrimRight(baseURL, "/"), AccountSID: sid, AuthToken: token,
		Client: &http.Client{Timeout: 30 * time.Second}}
}

// Send implements Provider: POST /2010-04-01/Accounts/{Sid}/Messages.json.
func (p *Twilio) Send(ctx context.Context, t Text) (string, error) {
	form := url.Values{}
	form.Set("To", t.To)
	form.Set("From", t.From)
	if t.Body != "" {
		form.Set("Body", t.Body)
	}
	for _, m := range t.Media {
		form.Add("MediaUrl", m)
	}
	if t.StatusCallback != "" {
		form.Set("StatusCallback", t.StatusCallback)
	}
	u := p.BaseURL + "/2010-04-01/Accounts/" + url.PathEscape(p.AccountSID) + "/Messages.json"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		return "", fmt.Errorf("failed to build the provider request: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	req.SetBasicAuth(p.AccountSID, p.AuthToken)
	resp, err := p.Client.Do(req)
	if err != nil {
		return "", fmt.Errorf("failed to reach the SMS provider: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAPIResponse))
	if err != nil {
		return "", fmt.Errorf("failed to read the SMS provider's answer: %w", err)
	}
	var ans struct {
		SID     string `json:"sid"`
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	_ = json.Unmarshal(body, &ans) // error answers may not be JSON
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		pe := &ProviderError{Status: resp.StatusCode, Code: ans.Code, Message: ans.Message}
		if pe.Message == "" {
			pe.Message = strings.TrimSpace(string(body))
			if len(pe.Message) > 200 {
				pe.Message = pe.Message[:200]
			}
		}
		return "", pe
	}
	if ans.SID == "" {
		// Accepted but unusable: the text may have gone out, so trying
		// again could send it twice; report it as permanent.
		return "", &ProviderError{Status: resp.StatusCode, Message: "the provider's answer has no message sid: " + strconv.Quote(string(body[:min(len(body), 200)]))}
	}
	return ans.SID, nil
}
