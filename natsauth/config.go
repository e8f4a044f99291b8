package natsauth

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/capstream/capstream/internal/kubeclient"
	"github.com/capstream/capstream/internal/run"
)

// EnvPrefix prefixes the service's environment overrides, e.g.
// CAPSTREAM_NATSAUTH_NATS_PASSWORD or CAPSTREAM_NATSAUTH_CALLOUT_ISSUERSEED.
const EnvPrefix = "CAPSTREAM_NATSAUTH"

// User is the NATS user the callout connects as: one of the server's
// auth_callout auth_users, allowed only to receive requests on
// $SYS.REQ.USER.AUTH and answer them (CalloutPermissions).
const User = "capstream-nats-auth"

// Subject is where nats-server sends its authorization requests.
const Subject = "$SYS.REQ.USER.AUTH"

// The callout user's permissions on the server: subscribe to Subject
// only, publish nothing but one answer to each request it received
// (allow_responses, within ResponseTTL). It has no inbox: it never asks
// anything.
var subscribeAllow = []string{Subject}

// SubscribeAllow is the callout user's subscribe allow list.
func SubscribeAllow() []string { return append([]string(nil), subscribeAllow...) }

// ResponseTTL is how long after a request the callout user may answer it
// (allow_responses expires); above any review.
const ResponseTTL = time.Minute

// Config configures the callout.
type Config struct {
	// IssuerSeed is the NKey seed of the account key (SA…) that signs the
	// responses and the user JWTs; the server's auth_callout issuer is its
	// public key (`nats auth nkey gen account`, then `nats auth nkey
	// show`). Required; from the environment
	// (CAPSTREAM_NATSAUTH_CALLOUT_ISSUERSEED), never the file.
	IssuerSeed string `yaml:"issuerSeed" secret:"true"`
	// XKeySeed is the curve key seed (SX…) whose public key is the
	// server's auth_callout xkey: requests (which carry the token) and
	// responses are then encrypted end to end between server and callout.
	// Default empty: no encryption beyond the connection's TLS, and an
	// encrypted request is refused.
	XKeySeed string `yaml:"xkeySeed" secret:"true"`
	// Audience is the audience the producers' projected tokens are
	// requested for, and the only one the TokenReview accepts, so a token
	// made for the API server (or anything else) is refused here and a
	// token made for NATS is refused by the API server. Default
	// "capstream-nats".
	Audience string `yaml:"audience"`
	// ServiceAccounts are the users (system:serviceaccount:<ns>:<name>)
	// whose pod-bound tokens get a producer identity. Default
	// system:serviceaccount:capstream-system:capstream-producer.
	ServiceAccounts []string `yaml:"serviceAccounts"`
	// MaxTTL bounds a user JWT's lifetime; it is also never later than the
	// token's expiry. When it ends the server closes the connection and
	// the producer reconnects with its current token, which is reviewed
	// again: this is how long a deleted pod or node keeps its identity.
	// At least 1s (a producer reconnects that often). Default 1h.
	MaxTTL time.Duration `yaml:"maxTTL"`
	// ReviewTimeout bounds one TokenReview. Keep it below the server's
	// authorization timeout (authorization.timeout: by default 2s, or the
	// TLS timeout plus 1s, 3s, under TLS), after which the server refuses
	// the connection without waiting for the answer. Default 2s.
	ReviewTimeout time.Duration `yaml:"reviewTimeout"`
	// Account is the account the producers are placed in (the user JWT's
	// audience). Default "$G", the global account of a server configured
	// with static users, where capstream's streams live.
	Account string `yaml:"account"`
	// QueueGroup shares the requests between the replicas: each is
	// answered by one. Default "capstream-nats-auth".
	QueueGroup string `yaml:"queueGroup"`
	// Workers is how many requests are reviewed at once. Default 8.
	Workers int `yaml:"workers"`
	// MaxPending bounds the requests waiting for a worker; past it the
	// server's requests are dropped (and time out there). Default 1024.
	MaxPending int `yaml:"maxPending"`
}

// DefaultConfig returns the defaults (no issuer seed).
func DefaultConfig() Config {
	return Config{
		Audience:        "capstream-nats",
		ServiceAccounts: []string{"system:serviceaccount:capstream-system:capstream-producer"},
		MaxTTL:          time.Hour,
		ReviewTimeout:   2 * time.Second,
		Account:         "$G",
		QueueGroup:      User,
		Workers:         8,
		MaxPending:      1024,
	}
}

// Validate checks every field, including that the seeds are keys of the
// right kind.
func (c Config) Validate() error {
	var errs []error
	if c.IssuerSeed == "" {
		errs = append(errs, errors.New("callout.issuerSeed: required (an account nkey seed, SA...): set CAPSTREAM_NATSAUTH_CALLOUT_ISSUERSEED"))
	} else if _, err := issuerKey(c.IssuerSeed); err != nil {
		errs = append(errs, err)
	}
	if c.XKeySeed != "" {
		if _, err := curveKey(c.XKeySeed); err != nil {
			errs = append(errs, err)
		}
	}
	if c.Audience == "" {
		errs = append(errs, errors.New("callout.audience: required"))
	}
	if len(c.ServiceAccounts) == 0 {
		errs = append(errs, errors.New("callout.serviceAccounts: required"))
	}
	for _, sa := range c.ServiceAccounts {
		parts := strings.Split(sa, ":")
		if len(parts) != 4 || parts[0] != "system" || parts[1] != "serviceaccount" || parts[2] == "" || parts[3] == "" {
			errs = append(errs, fmt.Errorf("callout.serviceAccounts %q: want system:serviceaccount:<namespace>:<name>", sa))
		}
	}
	if c.MaxTTL < time.Second {
		errs = append(errs, fmt.Errorf("callout.maxTTL %s: at least 1s", c.MaxTTL))
	}
	if c.ReviewTimeout <= 0 {
		errs = append(errs, fmt.Errorf("callout.reviewTimeout %s: must be positive", c.ReviewTimeout))
	}
	if c.Account == "" || strings.ContainsAny(c.Account, " \t\r\n.*>") {
		errs = append(errs, fmt.Errorf("callout.account %q: want an account name", c.Account))
	}
	if c.QueueGroup == "" || strings.ContainsAny(c.QueueGroup, " \t\r\n*>") {
		errs = append(errs, fmt.Errorf("callout.queueGroup %q: want a queue name", c.QueueGroup))
	}
	if c.Workers < 1 || c.MaxPending < 1 {
		errs = append(errs, fmt.Errorf("callout: workers %d and maxPending %d must be positive", c.Workers, c.MaxPending))
	}
	return errors.Join(errs...)
}

// issuerKey is the account key pair of a seed.
func issuerKey(seed string) (nkeys.KeyPair, error) {
	kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(seed)))
	if err != nil {
		return nil, fmt.Errorf("callout.issuerSeed: not an nkey seed: %w", err)
	}
	if pub, err := kp.PublicKey(); err != nil || !nkeys.IsValidPublicAccountKey(pub) {
		return nil, errors.New("callout.issuerSeed: not an account seed (SA...): make one with `nats auth nkey gen account`")
	}
	return kp, nil
}

// curveKey is the curve key pair of a seed.
func curveKey(seed string) (nkeys.KeyPair, error) {
	kp, err := nkeys.FromCurveSeed([]byte(strings.TrimSpace(seed)))
	if err != nil {
		return nil, fmt.Errorf("callout.xkeySeed: not a curve seed (SX...): %w", err)
	}
	return kp, nil
}

// KubeConfig says how the callout reaches the API server: it only creates
// TokenReviews, one per producer connection.
type KubeConfig = kubeclient.Config

// Settings is `capstream nats-auth`'s configuration file: the sections
// every service has (log, http, nats: the callout's own connection, as
// User), the API server and the callout.
type Settings struct {
	run.ServiceSettings `yaml:",inline"`
	// Kube says how to reach the API server.
	Kube KubeConfig `yaml:"kube"`
	// Callout configures the reviews and what they grant.
	Callout Config `yaml:"callout"`
}

// DefaultSettings returns the defaults of every section.
func DefaultSettings() *Settings {
	return &Settings{ServiceSettings: run.DefaultServiceSettings(User), Kube: kubeclient.Default(), Callout: DefaultConfig()}
}

// Validate checks every section; config.Load calls it after the
// overrides. The callout's own connection needs TLS and credentials like
// every service's, unless nats.plaintext or nats.anonymous say otherwise.
func (s *Settings) Validate() error {
	return errors.Join(s.ServiceSettings.Validate(), s.Kube.Validate(), s.Callout.Validate())
}
