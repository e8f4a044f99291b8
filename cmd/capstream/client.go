package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/minio/minio-go/v7"
	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/capstream/capstream/internal/clients"
	"github.com/capstream/capstream/internal/config"
	"github.com/capstream/capstream/schemas"
)

// Exit codes of the user commands, on top of those in main.go.
const (
	exitNotFound    = 4 // the capture (or its data) does not exist
	exitUnavailable = 5 // a service (API server, ClickHouse, S3) cannot be reached
)

var (
	// errNotFound marks a missing capture or missing data.
	errNotFound = errors.New("not found")
	// errUnavailable marks a service that cannot be reached.
	errUnavailable = errors.New("unavailable")
)

// The user commands read their connections from the environment in the
// scheme every capstream setting follows: CAPSTREAM_<SECTION>_<FIELD>, the
// YAML path of the field upper-cased (a service adds its own name:
// CAPSTREAM_SINK_PCAP_S3_SECRETKEY). Flags, where there are any, win.
const cliEnvPrefix = "CAPSTREAM"

// cliSections are the sections of cliSettings; only variables under them
// are read, so other CAPSTREAM_* variables (a service's, deps.sh's) in the
// same shell are not mistaken for typos.
var cliSections = []string{"CAPSTREAM_CLICKHOUSE_", "CAPSTREAM_S3_", "CAPSTREAM_PCAP_"}

// deprecatedEnv are the names the user commands read before they followed
// the scheme; they still work for one release, with a warning.
var deprecatedEnv = map[string]string{
	"CAPSTREAM_S3_ACCESS_KEY":   "CAPSTREAM_S3_ACCESSKEY",
	"CAPSTREAM_S3_SECRET_KEY":   "CAPSTREAM_S3_SECRETKEY",
	"CAPSTREAM_S3_PREFIX":       "CAPSTREAM_PCAP_PREFIX",
	"CAPSTREAM_CLICKHOUSE_USER": "CAPSTREAM_CLICKHOUSE_USERNAME",
	"CLICKHOUSE_PASSWORD":       "CAPSTREAM_CLICKHOUSE_PASSWORD",
}

// cliSettings are the user commands' connections.
type cliSettings struct {
	// ClickHouse holds the flows and pcap_objects tables.
	ClickHouse clients.ClickHouseConfig `yaml:"clickhouse"`
	// S3 holds the pcap objects.
	S3 clients.S3Config `yaml:"s3"`
	// Pcap is where the pcap sink writes: its key prefix.
	Pcap struct {
		// Prefix is the first part of every object key, as the pcap
		// sink's pcap.prefix. Default "capstream".
		Prefix string `yaml:"prefix"`
	} `yaml:"pcap"`
}

// loadCLISettings reads the defaults and the environment; warn receives
// one line for each deprecated name in use.
func loadCLISettings(environ []string, warn io.Writer) (*cliSettings, error) {
	s := &cliSettings{ClickHouse: clients.DefaultClickHouseConfig(), S3: clients.DefaultS3Config()}
	s.Pcap.Prefix = "capstream"
	set := map[string]bool{}
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		set[name] = true
	}
	var env []string
	for _, kv := range environ {
		name, value, _ := strings.Cut(kv, "=")
		if to, ok := deprecatedEnv[name]; ok {
			if set[to] {
				fmt.Fprintf(warn, "capstream: %s is deprecated and ignored: %s is set\n", name, to)
				continue
			}
			fmt.Fprintf(warn, "capstream: %s is deprecated: use %s\n", name, to)
			env = append(env, to+"="+value)
			continue
		}
		for _, sec := range cliSections {
			if strings.HasPrefix(name, sec) {
				env = append(env, kv)
			}
		}
	}
	if err := config.Load("", cliEnvPrefix, env, s); err != nil {
		return nil, usageError{Err: fmt.Errorf("environment: %w", err)}
	}
	return s, nil
}

// cliEnv is loaded once per command line (newRootCmd resets it), at the
// first command that needs it, so each deprecation warning is shown once.
var cliEnv func() (*cliSettings, error)

func resetCLIEnv(stderr io.Writer) {
	cliEnv = sync.OnceValues(func() (*cliSettings, error) { return loadCLISettings(os.Environ(), stderr) })
}

// kubeFlags locate the API server.
type kubeFlags struct {
	kubeconfig string
	namespace  string
}

func (k *kubeFlags) add(f *pflag.FlagSet) {
	f.StringVar(&k.kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig file (default $KUBECONFIG, then ~/.kube/config, then in-cluster)")
	f.StringVarP(&k.namespace, "namespace", "n", "default", "the capture's namespace")
}

func (k *kubeFlags) dynamic() (dynamic.Interface, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if k.kubeconfig != "" {
		rules.ExplicitPath = k.kubeconfig
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, usageError{Err: fmt.Errorf("kubeconfig: %w", err)}
	}
	cfg.Timeout = 30 * time.Second
	return dynamic.NewForConfig(cfg)
}

// chFlags locate ClickHouse: the environment's settings, then flags.
type chFlags struct {
	cfg clients.ClickHouseConfig
	err error
}

func (c *chFlags) add(f *pflag.FlagSet) {
	env, err := cliEnv()
	c.err = err
	if env != nil {
		c.cfg = env.ClickHouse
	}
	f.StringVar(&c.cfg.Addr, "clickhouse-addr", c.cfg.Addr, "ClickHouse native address host:port ($CAPSTREAM_CLICKHOUSE_ADDR)")
	f.StringVar(&c.cfg.Database, "clickhouse-database", c.cfg.Database, "database with the flows and pcap_objects tables ($CAPSTREAM_CLICKHOUSE_DATABASE)")
	f.StringVar(&c.cfg.Username, "clickhouse-user", c.cfg.Username, "ClickHouse user ($CAPSTREAM_CLICKHOUSE_USERNAME; the password comes from $CAPSTREAM_CLICKHOUSE_PASSWORD)")
}

func (c *chFlags) open() (driver.Conn, error) {
	if c.err != nil {
		return nil, c.err
	}
	if err := c.cfg.Validate(); err != nil {
		return nil, usageError{Err: err}
	}
	return c.cfg.Open()
}

// s3Flags locate the object store and the pcap sink's key prefix: the
// environment's settings, then flags.
type s3Flags struct {
	cfg    clients.S3Config
	prefix string
	err    error
}

func (s *s3Flags) add(f *pflag.FlagSet) {
	env, err := cliEnv()
	s.err = err
	if env != nil {
		s.cfg, s.prefix = env.S3, env.Pcap.Prefix
	}
	f.StringVar(&s.cfg.Endpoint, "s3-endpoint", s.cfg.Endpoint, "S3 host:port ($CAPSTREAM_S3_ENDPOINT)")
	f.StringVar(&s.cfg.Bucket, "s3-bucket", s.cfg.Bucket, "bucket the pcap sink writes to ($CAPSTREAM_S3_BUCKET)")
	f.StringVar(&s.prefix, "s3-prefix", s.prefix, "key prefix the pcap sink writes under ($CAPSTREAM_PCAP_PREFIX)")
	f.BoolVar(&s.cfg.Secure, "s3-secure", s.cfg.Secure, "use HTTPS ($CAPSTREAM_S3_SECURE)")
}

func (s *s3Flags) client() (*minio.Client, error) {
	if s.err != nil {
		return nil, s.err
	}
	if s.cfg.Endpoint == "" {
		return nil, usageError{Err: errors.New("no S3 endpoint: set --s3-endpoint or CAPSTREAM_S3_ENDPOINT (and CAPSTREAM_S3_ACCESSKEY, CAPSTREAM_S3_SECRETKEY)")}
	}
	if err := s.cfg.Validate(); err != nil {
		return nil, usageError{Err: err}
	}
	return s.cfg.Client()
}

// captureDir is the key prefix of one capture's objects, as the pcap sink
// lays them out (schemas.CaptureDir): <prefix>/<namespace>/<capture>/<uid>/,
// then <node>/ when node is set. With uid empty it is the prefix of every
// UID the name ever had, <prefix>/<namespace>/<capture>/.
func (s *s3Flags) captureDir(namespace, name, uid, node string) string {
	p := schemas.CaptureDir(s.prefix, namespace, name, uid)
	if uid != "" && node != "" {
		p += schemas.KeySegment(node) + "/"
	}
	return p
}

// checkCaptureName rejects names that cannot be a PacketCapture, before
// they reach a query or an object key.
func checkCaptureName(namespace, name string) error {
	for _, msg := range validation.IsDNS1123Subdomain(name) {
		return usageError{Err: fmt.Errorf("invalid capture name %q: %s", name, msg)}
	}
	for _, msg := range validation.IsDNS1123Label(namespace) {
		return usageError{Err: fmt.Errorf("invalid namespace %q: %s", namespace, msg)}
	}
	return nil
}
