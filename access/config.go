package access

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/capstream/capstream/internal/clients"
	"github.com/capstream/capstream/internal/kubeclient"
	"github.com/capstream/capstream/internal/run"
)

// EnvPrefix prefixes the access API's environment overrides, e.g.
// CAPSTREAM_ACCESS_S3_SECRETKEY or CAPSTREAM_ACCESS_CLICKHOUSE_PASSWORD.
const EnvPrefix = "CAPSTREAM_ACCESS"

// Config configures the API itself: its listener, the review cache and
// the limits of each endpoint.
type Config struct {
	// Listen is the API's host:port. Default ":8443".
	Listen string `yaml:"listen"`
	// CertFile and KeyFile are the server certificate and key (PEM). Both
	// are required unless Plaintext is set.
	CertFile string `yaml:"certFile"`
	KeyFile  string `yaml:"keyFile"`
	// Plaintext serves plain HTTP, so bearer tokens, pcaps and flows
	// cross the network in clear text. Default false: the API refuses to
	// start without a certificate. It logs a warning.
	Plaintext bool `yaml:"plaintext"`
	// Prefix is the pcap sink's key prefix (its pcap.prefix). Default
	// "capstream".
	Prefix string `yaml:"prefix"`
	// ReviewCacheTTL is how long an allowed TokenReview or
	// SubjectAccessReview is reused for the same token, so the many
	// requests of one download cost one review each. It is also how long a
	// revoked token or Role keeps working. Default 10s; 0 disables the
	// cache.
	ReviewCacheTTL time.Duration `yaml:"reviewCacheTTL"`
	// ReviewCacheSize bounds the cached reviews (entries). Default 4096.
	ReviewCacheSize int `yaml:"reviewCacheSize"`
	// ReviewTimeout bounds one review or read of a PacketCapture. Default 10s.
	ReviewTimeout time.Duration `yaml:"reviewTimeout"`
	// MaxObjects bounds the objects one listing returns (and a clean or
	// merge acts on); a capture with more answers 413 and asks for a
	// narrower since/until. Default 20000.
	MaxObjects int `yaml:"maxObjects"`
	// MaxMergeObjects bounds the objects one merged download reads at
	// once (one open S3 stream each). Default 256.
	MaxMergeObjects int `yaml:"maxMergeObjects"`
	// MaxFlowRows caps the limit of a flows query. Default 10000.
	MaxFlowRows int `yaml:"maxFlowRows"`
	// FlowQueryTimeout is ClickHouse's max_execution_time for a flows
	// query. Default 60s.
	FlowQueryTimeout time.Duration `yaml:"flowQueryTimeout"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Listen: ":8443", Prefix: "capstream",
		ReviewCacheTTL: 10 * time.Second, ReviewCacheSize: 4096, ReviewTimeout: 10 * time.Second,
		MaxObjects: 20000, MaxMergeObjects: 256, MaxFlowRows: 10000, FlowQueryTimeout: time.Minute,
	}
}

// Validate checks the listener's TLS rule and the limits.
func (c Config) Validate() error {
	var errs []error
	if c.Listen == "" {
		errs = append(errs, errors.New("access.listen: required"))
	}
	switch {
	case c.CertFile == "" && c.KeyFile == "" && !c.Plaintext:
		errs = append(errs, errors.New("access: no certificate: set access.certFile and access.keyFile, or access.plaintext: true to send tokens and pcaps in clear text"))
	case (c.CertFile == "") != (c.KeyFile == ""):
		errs = append(errs, errors.New("access: set both certFile and keyFile, or neither"))
	case c.CertFile != "" && c.Plaintext:
		errs = append(errs, errors.New("access.plaintext is set together with a certificate: drop one"))
	}
	if c.Prefix == "" || strings.HasPrefix(c.Prefix, "/") || strings.HasSuffix(c.Prefix, "/") {
		errs = append(errs, fmt.Errorf("access.prefix %q: want non-empty, without leading or trailing '/'", c.Prefix))
	}
	if c.ReviewCacheTTL < 0 || c.ReviewCacheSize < 1 || c.ReviewTimeout <= 0 {
		errs = append(errs, fmt.Errorf("access: reviewCacheTTL %s must not be negative, reviewCacheSize %d and reviewTimeout %s must be positive", c.ReviewCacheTTL, c.ReviewCacheSize, c.ReviewTimeout))
	}
	if c.MaxObjects < 1 || c.MaxMergeObjects < 2 || c.MaxFlowRows < 1 {
		errs = append(errs, fmt.Errorf("access: maxObjects %d, maxMergeObjects %d (at least 2) and maxFlowRows %d must be positive", c.MaxObjects, c.MaxMergeObjects, c.MaxFlowRows))
	}
	if c.FlowQueryTimeout < time.Second {
		errs = append(errs, fmt.Errorf("access.flowQueryTimeout %s: at least 1s", c.FlowQueryTimeout))
	}
	return errors.Join(errs...)
}

// Warnings are the lines the API logs at start about protections turned
// off.
func (c Config) Warnings() []string {
	if c.Plaintext {
		return []string{"access.plaintext is set: bearer tokens, pcaps and flows cross the network in clear text"}
	}
	return nil
}

// KubeConfig says how the API reaches the API server, as its own
// identity: it creates TokenReviews and SubjectAccessReviews and reads
// PacketCaptures.
type KubeConfig = kubeclient.Config

// Settings is `capstream access`'s configuration file: the logger, the
// health and metrics listener, the API server, the stores (the only
// holder of their credentials among the user-facing parts) and the API.
// It has no NATS section: the API never touches the bus.
type Settings struct {
	// Log configures the logger.
	Log run.LogConfig `yaml:"log"`
	// HTTP is the health and metrics listener (not the API's).
	HTTP run.HTTPConfig `yaml:"http"`
	// Kube says how to reach the API server.
	Kube KubeConfig `yaml:"kube"`
	// ClickHouse is the read-only user flows are queried as.
	ClickHouse clients.ClickHouseConfig `yaml:"clickhouse"`
	// S3 holds the pcap objects.
	S3 clients.S3Config `yaml:"s3"`
	// Access configures the API.
	Access Config `yaml:"access"`
}

// DefaultSettings returns the defaults of every section. ClickHouse's
// user is capstream-reader, the read-only user deploy/dev/deps.sh makes.
func DefaultSettings() *Settings {
	ch := clients.DefaultClickHouseConfig()
	ch.Username = "capstream-reader"
	return &Settings{Log: run.DefaultLogConfig(), HTTP: run.DefaultHTTPConfig(), Kube: kubeclient.Default(),
		ClickHouse: ch, S3: clients.DefaultS3Config(), Access: DefaultConfig()}
}

// Validate checks every section; config.Load calls it after the overrides.
func (s *Settings) Validate() error {
	return errors.Join(s.Log.Validate(), s.HTTP.Validate(), s.Kube.Validate(), s.ClickHouse.Validate(), s.S3.Validate(), s.Access.Validate())
}
