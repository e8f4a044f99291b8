package testenv

import (
	"testing"
	"time"
)

// Consistently calls fn every 50ms for the whole period and fails the test
// at fn's first error. It is Eventually's counterpart for what must not
// happen: no republish, no further write.
func Consistently(t testing.TB, period time.Duration, fn func() error) {
	t.Helper()
	deadline := time.After(period)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := fn(); err != nil {
			t.Fatal(err)
		}
		select {
		case <-deadline:
			return
		case <-tick.C:
		}
	}
}
