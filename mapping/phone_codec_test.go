package mapping

import (
	"errors"
	"fmt"
	"testing"
)

func TestNormalizeNumber(t *testing.T) {
	for _, tc := range []struct {
		input, region string
		want          string // "" means an error wrapping ErrMalformed is expected
	}{
		// International format, any region.
		{"+1 555 123 4567", "", "+15551234567"},
		{"+1 (202) 456-1111", "", "+12024561111"},
		{"+44 20 7946 0958", "", "+442079460958"},
		{"+44 20 7946 0958", "US", "+442079460958"},
		{"+44 (0)20 7946 0958", "", "+442079460958"},
		{"+4402079460958", "", "+442079460958"},
		{"+39 06 1234 5678", "", "+390612345678"}, // Italian leading zero is kept
		{"+45 32 12 34 56", "", "+4532123456"},
		{"  +1.202.456.1111  ", "", "+12024561111"},
		// US national formats.
		{"(555) 123-4567", "US", "+15551234567"},
		{"555-123-4567", "US", "+15551234567"},
		{"555.123.4567", "us", "+15551234567"},
		{"5551234567", "US", "+15551234567"},
		{"1 (202) 456-1111", "US", "+12024561111"},
		{"1-800-555-0199", "US", "+18005550199"},
		// GB national formats.
		{"020 7946 0958", "GB", "+442079460958"},
		{"(020) 7946-0958", "GB", "+442079460958"},
		{"07700 900123", "GB", "+447700900123"},
		{"0044 20 7946 0958", "GB", "+442079460958"},
		// Short codes are kept as digits...
		{"72345", "US", "72345"},
		{"72345", "", "72345"},
		{"911", "US", "911"},
		{"12345678", "", "12345678"},
		{"0800", "GB", "0800"},
		// ... unless they are complete numbers in the region.
		{"32123456", "DK", "+4532123456"},
		{"7234", "NU", "+6837234"},

		// Garbage and letters.
		{"", "US", ""},
		{"   ", "US", ""},
		{"abc", "US", ""},
		{"1-800-FLOWERS", "US", ""},
		{"555-123-4567 ext. 12", "US", ""},
		{"+1 555 123 4567;ext=12", "", ""},
		{"tel:+15551234567", "", ""},
		{"++15551234567", "", ""},
		{"1+5551234567", "US", ""},
		{"+", "", ""},
		{"()", "US", ""},
		{"\uff11\uff12\uff13\uff14\uff15", "", ""}, // fullwidth digits
		{"+1 555 123 4567 " + "0123456789012345678901234567890123456789012345", "", ""},
		// Short code lengths.
		{"12", "US", ""},
		{"123456789", "", ""}, // 9 digits, national, no region
		// Not valid and not possible.
		{"555-1234", "US", ""}, // local only, lacks the area code
		{"+1 555", "", ""},
		{"+1 202 456 1111 1111", "", ""},
		{"+999 1234 5678", "", ""}, // unassigned country code
		{"+44 1", "", ""},
		{"020 7946", "GB", ""},
		{"0", "US", ""},
		{"(555) 123-4567", "", ""}, // national, no region
	} {
		got, err := NormalizeNumber(tc.input, tc.region)
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("NormalizeNumber(%q, %q) = %q, want an error", tc.input, tc.region, got)
		case tc.want == "" && !errors.Is(err, ErrMalformed):
			t.Errorf("NormalizeNumber(%q, %q) error %v does not wrap ErrMalformed", tc.input, tc.region, err)
		case tc.want != "" && err != nil:
			t.Errorf("NormalizeNumber(%q, %q) failed: %v", tc.input, tc.region, err)
		case got != tc.want:
			t.Errorf("NormalizeNumber(%q, %q) = %q, want %q", tc.input, tc.region, got, tc.want)
		}
		if err != nil {
			continue
		}
		if back, err := NumberFromLocal(EscapeLocal(got)); err != nil || back != got {
			t.Errorf("NumberFromLocal(%q) = %q, %v", got, back, err)
		}
	}
}

func TestNormalizeNumberBadRegion(t *testing.T) {
	for _, region := range []string{"XX", "ZZ", "USA", "1"} {
		_, err := NormalizeNumber("+15551234567", region)
		if err == nil {
			t.Errorf("NormalizeNumber with region %q succeeded", region)
		} else if errors.Is(err, ErrMalformed) {
			t.Errorf("NormalizeNumber with region %q: %v wraps ErrMalformed, but the number is fine", region, err)
		}
	}
}

func TestNumberFromLocal(t *testing.T) {
	for _, tc := range []struct {
		local string
		want  string // "" means an error is expected
	}{
		{"+15551234567", "+15551234567"},
		{"+442079460958", "+442079460958"},
		{"+390612345678", "+390612345678"},
		{"+4532123456", "+4532123456"},
		{"72345", "72345"},
		{"911", "911"},
		{"12345678", "12345678"},

		{"", ""},
		{"12", ""},
		{"123456789", ""},
		{"15551234567", ""},
		{"+", ""},
		{"+0123456", ""},
		{"+1555", ""},
		{"+4402079460958", ""}, // not canonical
		{"+1 555 123 4567", ""},
		{`+1\20555\201234567`, ""},
		{"+1-555-123-4567", ""},
		{"+99912345678", ""},
		{"+1555123456789012", ""},
		{"+15551234567x", ""},
		{"+\u0661\u0665\u0665\u0665\u0661\u0662\u0663\u0664\u0665\u0666\u0667", ""}, // Arabic-Indic digits
		{"alice", ""},
	} {
		got, err := NumberFromLocal(tc.local)
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("NumberFromLocal(%q) = %q, want an error", tc.local, got)
		case tc.want == "" && !errors.Is(err, ErrMalformed):
			t.Errorf("NumberFromLocal(%q) error %v does not wrap ErrMalformed", tc.local, err)
		case tc.want != "" && err != nil:
			t.Errorf("NumberFromLocal(%q) failed: %v", tc.local, err)
		case got != tc.want:
			t.Errorf("NumberFromLocal(%q) = %q, want %q", tc.local, got, tc.want)
		}
	}
}

// Numbers accepted are remembered, per region, in two bounded
// generations; a remembered number is not taken for a JID's localpart
// that reads the same, nor for the same input in another region.
func TestNumberCache(t *testing.T) {
	numbers = numberCache{}
	defer func() { numbers = numberCache{} }()
	if got, err := NormalizeNumber("(555) 123-4567", "US"); err != nil || got != "+15551234567" {
		t.Fatalf("NormalizeNumber = %q, %v", got, err)
	}
	if _, ok := numbers.get("US (555) 123-4567"); !ok {
		t.Fatal("an accepted number is not remembered")
	}
	if got, err := NormalizeNumber(" (555) 123-4567 ", "us"); err != nil || got != "+15551234567" {
		t.Fatalf("remembered: NormalizeNumber = %q, %v", got, err)
	}
	if got, err := NormalizeNumber("(555) 123-4567", ""); err == nil {
		t.Fatalf("a national number without a region is taken from another region's: %q", got)
	}
	if got, err := NumberFromLocal(EscapeLocal("US (555) 123-4567")); err == nil {
		t.Fatalf("a localpart that reads as a remembered input is taken for a number: %q", got)
	}
	// NumberFromLocal remembers its canonical numbers too.
	if got, err := NumberFromLocal("+442079460958"); err != nil || got != "+442079460958" {
		t.Fatalf("NumberFromLocal = %q, %v", got, err)
	}
	if _, ok := numbers.get("+442079460958"); !ok {
		t.Fatal("a localpart accepted is not remembered")
	}
	for i := range 3 * numberCacheSize {
		n := fmt.Sprintf("+1555%07d", i)
		if got, err := NormalizeNumber(n, ""); err != nil || got != n {
			t.Fatalf("NormalizeNumber(%q) = %q, %v", n, got, err)
		}
		if len(numbers.cur) > numberCacheSize || len(numbers.old) > numberCacheSize {
			t.Fatalf("after %d numbers the cache holds %d + %d", i+1, len(numbers.cur), len(numbers.old))
		}
	}
	// The last one is remembered, the first long forgotten.
	if _, ok := numbers.get(fmt.Sprintf(" +1555%07d", 3*numberCacheSize-1)); !ok {
		t.Error("the last number is not remembered")
	}
	if _, ok := numbers.get(" +15550000000"); ok {
		t.Error("the cache is not bounded: the first number is still there")
	}
}

// BenchmarkNormalizeNumber: an inbound text's two numbers, remembered
// (the same few numbers, as a gateway sees them) and new each time.
func BenchmarkNormalizeNumber(b *testing.B) {
	b.Run("remembered", func(b *testing.B) {
		for b.Loop() {
			NormalizeNumber("+15557654321", "")
			NormalizeNumber("+15550000001", "")
		}
	})
	b.Run("new", func(b *testing.B) {
		i := 0
		for b.Loop() {
			i++
			NormalizeNumber(fmt.Sprintf("+1555%07d", i%10000000), "")
		}
	})
}
