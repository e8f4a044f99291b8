package main

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"
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

// envOr returns the environment variable or def; user commands take their
// service addresses from flags whose defaults come from the environment,
// so a shell that sourced the dev env file needs no flags at all.
func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
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
		return nil, usageError{fmt.Errorf("kubeconfig: %w", err)}
	}
	cfg.Timeout = 30 * time.Second
	return dynamic.NewForConfig(cfg)
}

// chFlags locate ClickHouse.
type chFlags struct {
	addr, database, user, password string
}

func (c *chFlags) add(f *pflag.FlagSet) {
	f.StringVar(&c.addr, "clickhouse-addr", envOr("CAPSTREAM_CLICKHOUSE_ADDR", "127.0.0.1:9000"), "ClickHouse native address (default $CAPSTREAM_CLICKHOUSE_ADDR)")
	f.StringVar(&c.database, "clickhouse-database", envOr("CAPSTREAM_CLICKHOUSE_DATABASE", "default"), "database with the flows and pcap_objects tables")
	f.StringVar(&c.user, "clickhouse-user", envOr("CAPSTREAM_CLICKHOUSE_USER", "default"), "ClickHouse user")
	c.password = os.Getenv("CAPSTREAM_CLICKHOUSE_PASSWORD")
}

func (c *chFlags) open() (driver.Conn, error) {
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr:        []string{c.addr},
		Auth:        clickhouse.Auth{Database: c.database, Username: c.user, Password: c.password},
		DialTimeout: 10 * time.Second,
		ReadTimeout: time.Minute,
	})
	if err != nil {
		return nil, fmt.Errorf("clickhouse %s: %w", c.addr, err)
	}
	return conn, nil
}

// s3Flags locate the object store and the pcap sink's key prefix.
type s3Flags struct {
	endpoint, bucket, prefix, accessKey, secretKey string
	secure                                         bool
}

func (s *s3Flags) add(f *pflag.FlagSet) {
	f.StringVar(&s.endpoint, "s3-endpoint", os.Getenv("CAPSTREAM_S3_ENDPOINT"), "S3 host:port (default $CAPSTREAM_S3_ENDPOINT)")
	f.StringVar(&s.bucket, "s3-bucket", envOr("CAPSTREAM_S3_BUCKET", "capstream"), "bucket the pcap sink writes to (default $CAPSTREAM_S3_BUCKET)")
	f.StringVar(&s.prefix, "s3-prefix", envOr("CAPSTREAM_S3_PREFIX", "capstream"), "key prefix the pcap sink writes under (default $CAPSTREAM_S3_PREFIX)")
	f.BoolVar(&s.secure, "s3-secure", os.Getenv("CAPSTREAM_S3_SECURE") == "true", "use HTTPS")
	s.accessKey = os.Getenv("CAPSTREAM_S3_ACCESS_KEY")
	s.secretKey = os.Getenv("CAPSTREAM_S3_SECRET_KEY")
}

func (s *s3Flags) client() (*minio.Client, error) {
	if s.endpoint == "" {
		return nil, usageError{errors.New("no S3 endpoint: set --s3-endpoint or CAPSTREAM_S3_ENDPOINT (and CAPSTREAM_S3_ACCESS_KEY, CAPSTREAM_S3_SECRET_KEY)")}
	}
	return minio.New(s.endpoint, &minio.Options{
		Creds:  credentials.NewStaticV4(s.accessKey, s.secretKey, ""),
		Secure: s.secure,
	})
}

// captureDir is the key prefix of one capture's objects, as the pcap sink
// lays them out: <prefix>/<namespace>/<capture>/<node>/<pod>_<iface>/...
func (s *s3Flags) captureDir(namespace, name, node string) string {
	p := s.prefix + "/" + namespace + "/" + name + "/"
	if node != "" {
		p += node + "/"
	}
	return p
}

// checkCaptureName rejects names that cannot be a PacketCapture, before
// they reach a query or an object key.
func checkCaptureName(namespace, name string) error {
	for _, msg := range validation.IsDNS1123Subdomain(name) {
		return usageError{fmt.Errorf("invalid capture name %q: %s", name, msg)}
	}
	for _, msg := range validation.IsDNS1123Label(namespace) {
		return usageError{fmt.Errorf("invalid namespace %q: %s", namespace, msg)}
	}
	return nil
}
