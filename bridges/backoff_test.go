package bridges

import (
	"testing"
	"time"
)

func TestRetryBackoff(t *testing.T) {
	max := time.Minute
	b := RetryBackoff(max)
	prev := time.Duration(0)
	for n := range 10 {
		d := b.Delay(n)
		want := min(FirstRetry<<n, max)
		if d > want || d < want*4/5 {
			t.Errorf("Delay(%d) = %v, want %v less at most 20%%", n, d, want)
		}
		if d < prev*4/5 {
			t.Errorf("Delay(%d) = %v shrank from %v", n, d, prev)
		}
		prev = d
	}
	if d := b.Delay(1 << 30); d > max {
		t.Errorf("Delay(huge) = %v, above the cap", d)
	}
	if d := RetryBackoff(time.Second).Delay(0); d > time.Second {
		t.Errorf("a cap below the first retry is not honoured: %v", d)
	}
}

func TestBackoffJitter(t *testing.T) {
	b := Backoff{First: time.Second, Max: 8 * time.Second, Jitter: 0.5}
	for n, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second} {
		if d := b.Delay(n); d > want || d < want/2 {
			t.Errorf("Delay(%d) = %v, want %v less at most half", n, d, want)
		}
	}
	exact := Backoff{First: time.Second, Max: time.Minute}
	if d := exact.Delay(3); d != 8*time.Second {
		t.Errorf("without jitter: Delay(3) = %v", d)
	}
}
