// Package natsauth is `capstream nats-auth`, the NATS auth callout that
// gives each node's producer an identity of its own in a cluster
// (DESIGN.md "Identities on the bus").
//
// nats-server, configured with an auth_callout block, sends every new
// connection that is not one of its static users to Subject as a signed
// authorization request. A producer connects with its pod's projected
// service-account token as its NATS token; the callout checks the token
// with a TokenReview for its audience (Config.Audience), requires one of
// the allowed service accounts, reads the node the pod is bound to from
// the review (authentication.kubernetes.io/node-name, which the API
// server takes from the pod's spec.nodeName when it issues the token),
// and answers with a user JWT, signed by the issuer account key the
// server trusts, carrying schemas.ProducerIdentity(node)'s publish and
// subscribe allow lists and nothing else, expiring no later than the
// token. Anything else gets a signed refusal, counted by reason and logged
// at most once a minute per reason; no log line or answer holds a token.
//
// Lifecycle: New checks the configuration and parses the keys; Run
// subscribes (in a queue group, so replicas share the requests), runs
// Config.Workers goroutines that review requests, and returns when ctx
// ends, once they have stopped. The NATS connection is the caller's.
package natsauth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/kubernetes"
)

// Deps are the callout's collaborators.
type Deps struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// NATS is connected as User, with permission to subscribe to Subject
	// and to answer the requests (allow_responses).
	NATS *nats.Conn
	// Kube creates TokenReviews.
	Kube kubernetes.Interface
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Callout answers the server's authorization requests.
type Callout struct {
	cfg     Config
	deps    Deps
	log     *slog.Logger
	metrics *metrics
	issuer  nkeys.KeyPair
	xkey    nkeys.KeyPair // nil: requests and answers are not encrypted
	now     func() time.Time

	mu     sync.Mutex
	sub    *nats.Subscription
	logged map[reason]logState
}

// logState is when a refusal reason was last logged and how many were
// not logged since.
type logState struct {
	at         time.Time
	suppressed int
}

// logEvery is how often a refusal reason is logged at most.
const logEvery = time.Minute

// New checks the configuration and parses the keys; it does no I/O.
func New(cfg Config, deps Deps) (*Callout, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Logger == nil || deps.Registerer == nil || deps.NATS == nil || deps.Kube == nil {
		return nil, errors.New("natsauth: Logger, Registerer, NATS and Kube are required")
	}
	issuer, err := issuerKey(cfg.IssuerSeed)
	if err != nil {
		return nil, err
	}
	c := &Callout{cfg: cfg, deps: deps, log: deps.Logger.With("component", "nats-auth"), issuer: issuer,
		now: deps.Now, logged: map[reason]logState{}}
	if c.now == nil {
		c.now = time.Now
	}
	if cfg.XKeySeed != "" {
		if c.xkey, err = curveKey(cfg.XKeySeed); err != nil {
			return nil, err
		}
	}
	c.metrics = newMetrics(deps.Registerer)
	return c, nil
}

// Run answers requests until ctx ends.
func (c *Callout) Run(ctx context.Context) error {
	pub, _ := c.issuer.PublicKey()
	ch := make(chan *nats.Msg, c.cfg.MaxPending)
	sub, err := c.deps.NATS.ChanQueueSubscribe(Subject, c.cfg.QueueGroup, ch)
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", Subject, err)
	}
	c.mu.Lock()
	c.sub = sub
	c.mu.Unlock()
	c.log.Info("answering nats authorization requests", "subject", Subject, "issuer", pub,
		"encrypted", c.xkey != nil, "audience", c.cfg.Audience, "service_accounts", c.cfg.ServiceAccounts)
	var wg sync.WaitGroup
	for range c.cfg.Workers {
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case m := <-ch:
					c.handle(ctx, m)
				}
			}
		})
	}
	<-ctx.Done()
	err = sub.Unsubscribe()
	wg.Wait()
	if err != nil && !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrBadSubscription) {
		return fmt.Errorf("unsubscribe %s: %w", Subject, err)
	}
	return nil
}

// Ready reports whether requests can reach the callout: NATS connected
// and the subscription in place.
func (c *Callout) Ready() error {
	c.mu.Lock()
	sub := c.sub
	c.mu.Unlock()
	switch {
	case sub == nil || !sub.IsValid():
		return errors.New("not subscribed to " + Subject)
	case !c.deps.NATS.IsConnected():
		return errors.New("nats not connected")
	}
	return nil
}
