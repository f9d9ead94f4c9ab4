package bridges

import (
	"testing"
	"time"
)

func TestRetryDelay(t *testing.T) {
	max := time.Minute
	prev := time.Duration(0)
	for n := range 10 {
		d := RetryDelay(n, max)
		want := min(FirstRetry<<n, max)
		if d > want || d < want*4/5 {
			t.Errorf("RetryDelay(%d) = %v, want %v less at most 20%%", n, d, want)
		}
		if d < prev*4/5 {
			t.Errorf("RetryDelay(%d) = %v shrank from %v", n, d, prev)
		}
		prev = d
	}
	if d := RetryDelay(1<<30, max); d > max {
		t.Errorf("RetryDelay(huge) = %v, above the cap", d)
	}
	if d := RetryDelay(0, time.Second); d > time.Second {
		t.Errorf("a cap below the first retry is not honoured: %v", d)
	}
}
