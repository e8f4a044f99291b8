package testenv

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// permissionTimeout is how long a test waits for the server's permission
// violation, which arrives asynchronously.
const permissionTimeout = 5 * time.Second

// Violations collects the asynchronous errors a NATS server sends one
// connection, its permission violations among them: give the connection
// nats.ErrorHandler(v.Handler).
type Violations struct {
	mu   sync.Mutex
	errs []string
}

// Handler is the connection's nats.ErrHandler.
func (v *Violations) Handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.errs = append(v.errs, err.Error())
}

// Has is nil once an error containing s has arrived.
func (v *Violations) Has(s string) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, e := range v.errs {
		if strings.Contains(e, s) {
			return nil
		}
	}
	return errors.New("no error containing " + s + " in [" + strings.Join(v.errs, "; ") + "]")
}

// WaitPublishDenied waits for the server's permission violation for a
// publish to subject (made by the caller, on a core or JetStream
// connection).
func (v *Violations) WaitPublishDenied(t testing.TB, subject string) {
	t.Helper()
	Eventually(t, permissionTimeout, func() error {
		return v.Has(`Permissions Violation for Publish to "` + subject + `"`)
	})
}

// WaitSubscribeDenied waits for the server's permission violation for a
// subscription to subject.
func (v *Violations) WaitSubscribeDenied(t testing.TB, subject string) {
	t.Helper()
	Eventually(t, permissionTimeout, func() error {
		return v.Has(`Permissions Violation for Subscription to "` + subject + `"`)
	})
}

// RequirePublishDenied publishes a forged message to each subject on the
// core connection nc, whose errors v records, and waits for the server's
// permission violation for each.
func RequirePublishDenied(t testing.TB, nc *nats.Conn, v *Violations, subjects ...string) {
	t.Helper()
	for _, s := range subjects {
		if err := nc.Publish(s, []byte(`{"forged":true}`)); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		v.WaitPublishDenied(t, s)
	}
}

// RequireSubscribeDenied subscribes nc, whose errors v records, to each
// subject and waits for the server's permission violation for each.
func RequireSubscribeDenied(t testing.TB, nc *nats.Conn, v *Violations, subjects ...string) {
	t.Helper()
	for _, s := range subjects {
		if _, err := nc.SubscribeSync(s); err != nil {
			t.Fatal(err)
		}
		v.WaitSubscribeDenied(t, s)
	}
}
