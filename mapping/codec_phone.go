package mapping

import (
	"fmt"
	"strings"
	"sync"

	"github.com/nyaruka/phonenumbers"
)

const (
	// Short codes (SMS-only numbers such as "72345") are 3 to 8 digits.
	minShortCode = 3
	maxShortCode = 8
	// maxNumberInput bounds the text NormalizeNumber hands the parser.
	maxNumberInput = 64
	// numberSeparators may appear between the digits of a number.
	numberSeparators = " \t-.()/"
)

// NormalizeNumber turns a phone number as a person writes it into the form
// the SMS bridge uses in JIDs: E.164 ("+15551234567") or, for a short code,
// its digits.
//
// input may be international ("+44 20 7946 0958" is "+442079460958") or,
// when region (an ISO 3166 code such as "US" or "GB") is given, national
// ("(555) 123-4567" with "US" is "+15551234567", "020 7946 0958" with "GB" is
// "+442079460958", "0044 20 7946 0958" too). It may hold digits, one leading
// '+' and the separators space, tab, '-', '.', '(', ')' and '/'; letters
// (vanity numbers, extensions) and anything else are refused.
//
// Input that is only 3 to 8 digits is a short code and is returned as the
// digits ("72345"), unless it is a valid complete number in region (some
// countries have 4- to 8-digit numbers), which is returned in E.164.
//
// A number is accepted when github.com/nyaruka/phonenumbers says it is valid,
// or that it has a possible length for its country (so that numbers in newly
// allocated or fictional ranges such as 555 still map); anything else is
// refused. Errors for bad input wrap ErrMalformed; an unknown region is the
// caller's mistake and gives an error that does not.
//
// Numbers accepted recently are remembered (numberCacheSize of them): a
// gateway sees the same few numbers again and again, and the library's
// parsing is most of the work of an inbound text.
func NormalizeNumber(input, region string) (string, error) {
	region = strings.ToUpper(strings.TrimSpace(region))
	s := strings.TrimSpace(input)
	key := region + " " + s
	if out, ok := numbers.get(key); ok {
		return out, nil
	}
	out, err := normalizeNumber(s, region)
	if err == nil {
		numbers.put(key, out)
	}
	return out, err
}

func normalizeNumber(s, region string) (string, error) {
	if region != "" && !phonenumbers.GetSupportedRegions()[region] {
		return "", fmt.Errorf("mapping: unknown phone number region %q", region)
	}
	switch {
	case s == "":
		return "", malformed("phone number is empty")
	case len(s) > maxNumberInput:
		return "", malformed("phone number %q is too long", s)
	}
	if isShortCode(s) {
		if region != "" {
			if num, err := parseNumber(s, region); err == nil && phonenumbers.IsValidNumber(num) {
				return phonenumbers.Format(num, phonenumbers.E164), nil
			}
		}
		return s, nil
	}

	digits := 0
	for i, r := range s {
		switch {
		case '0' <= r && r <= '9':
			digits++
		case r == '+' && i == 0:
		case strings.ContainsRune(numberSeparators, r):
		default:
			return "", malformed("phone number %q contains %q; only digits, a leading '+' and separators are allowed", s, r)
		}
	}
	switch {
	case digits == 0:
		return "", malformed("phone number %q has no digits", s)
	case s[0] != '+' && region == "":
		return "", malformed("phone number %q is not international (+...) and no region is set to read it as a national number", s)
	}
	num, err := parseNumber(s, region)
	if err != nil {
		return "", malformed("phone number %q: %v", s, err)
	}
	return e164(num, s)
}

// NumberFromLocal returns the phone number addressed by the localpart of a
// JID on the SMS bridge. XEP-0106 escapes are decoded first; the result must
// then already be a number in the form NormalizeNumber returns: a short code
// of 3 to 8 digits, or a canonical E.164 number ('+' and up to 15 digits
// that github.com/nyaruka/phonenumbers accepts and formats the same way).
// Anything else is refused with an error wrapping ErrMalformed.
func NumberFromLocal(local string) (string, error) {
	s := UnescapeLocal(local)
	if isShortCode(s) {
		return s, nil
	}
	if len(s) < 2 || len(s) > 16 || s[0] != '+' || s[1] == '0' || !allDigits(s[1:]) {
		return "", malformed("jid localpart %q is neither an E.164 number (+ and up to 15 digits) nor a short code (3 to 8 digits)", local)
	}
	// s has no space: it is none of NormalizeNumber's keys.
	if _, ok := numbers.get(s); ok {
		return s, nil
	}
	num, err := parseNumber(s, phonenumbers.UNKNOWN_REGION)
	if err != nil {
		return "", malformed("jid localpart %q: %v", local, err)
	}
	out, err := e164(num, s)
	if err != nil {
		return "", err
	}
	if out != s {
		return "", malformed("jid localpart %q is not in canonical E.164 form (%s)", local, out)
	}
	numbers.put(s, s)
	return s, nil
}

// numberCacheSize bounds the numbers remembered: two generations of up
// to this many each.
const numberCacheSize = 1024

// numbers are the numbers accepted recently.
var numbers numberCache

// numberCache maps inputs to the numbers they were accepted as. When the
// current generation is full it becomes the old one, and the old one is
// dropped; a number found in the old one moves to the current one.
type numberCache struct {
	mu       sync.Mutex
	cur, old map[string]string
}

func (c *numberCache) get(key string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if v, ok := c.cur[key]; ok {
		return v, true
	}
	v, ok := c.old[key]
	if ok {
		c.add(key, v)
	}
	return v, ok
}

func (c *numberCache) put(key, v string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.add(key, v)
}

func (c *numberCache) add(key, v string) {
	if len(c.cur) >= numberCacheSize {
		c.old, c.cur = c.cur, nil
	}
	if c.cur == nil {
		c.cur = make(map[string]string, numberCacheSize)
	}
	c.cur[key] = v
}

// isShortCode reports whether s is 3 to 8 ASCII digits.
func isShortCode(s string) bool {
	return minShortCode <= len(s) && len(s) <= maxShortCode && allDigits(s)
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// parseNumber calls phonenumbers.Parse, turning a panic in the library into
// an error.
func parseNumber(s, region string) (num *phonenumbers.PhoneNumber, err error) {
	defer func() {
		if r := recover(); r != nil {
			num, err = nil, fmt.Errorf("cannot be parsed (phone number library failed: %v)", r)
		}
	}()
	num, err = phonenumbers.Parse(s, region)
	if err != nil {
		return nil, fmt.Errorf("cannot be parsed: %v", strings.ToLower(err.Error()))
	}
	return num, nil
}

// e164 checks that num (parsed from s) is a valid or possible number and
// returns it in E.164 form, turning a panic in the library into an error.
func e164(num *phonenumbers.PhoneNumber, s string) (out string, err error) {
	defer func() {
		if r := recover(); r != nil {
			out, err = "", malformed("phone number %q cannot be checked (phone number library failed: %v)", s, r)
		}
	}()
	if !phonenumbers.IsValidNumber(num) {
		switch phonenumbers.IsPossibleNumberWithReason(num) {
		case phonenumbers.IS_POSSIBLE:
			// A national number that keeps a leading 0 (the national
			// prefix the parser could not strip) is only valid in Italy.
			if num.GetItalianLeadingZero() {
				return "", malformed("phone number %q is not a valid phone number", s)
			}
		case phonenumbers.TOO_SHORT:
			return "", malformed("phone number %q is too short", s)
		case phonenumbers.TOO_LONG:
			return "", malformed("phone number %q is too long", s)
		case phonenumbers.INVALID_COUNTRY_CODE:
			return "", malformed("phone number %q has an unknown country code", s)
		case phonenumbers.IS_POSSIBLE_LOCAL_ONLY:
			return "", malformed("phone number %q lacks an area code", s)
		default:
			return "", malformed("phone number %q is not a valid phone number", s)
		}
	}
	out = phonenumbers.Format(num, phonenumbers.E164)
	if len(out) < 2 || len(out) > 16 || out[0] != '+' || !allDigits(out[1:]) {
		return "", malformed("phone number %q has no E.164 form (got %q)", s, out)
	}
	return out, nil
}
