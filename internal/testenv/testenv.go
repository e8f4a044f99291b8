// Package testenv gives tests real services: an embedded JetStream server,
// a private ClickHouse database, a private S3 bucket, a kube-apiserver with
// the PacketCapture CRD installed, and network-namespace "nodes" with
// Calico-style pod veths.
//
// Services other than NATS are started by deploy/dev/deps.sh, which writes
// their addresses to an env file; testenv reads CAPSTREAM_TEST_* from the
// process environment first and from that file second. Each service is
// probed once per test binary. When one is unreachable the test is skipped,
// unless CAPSTREAM_TEST_REQUIRE_DEPS=1 (set by `make test`), which makes it
// fail. -short skips every test that needs a service.
//
// Every helper registers its own cleanup with t.Cleanup, under a fresh
// timeout context so cleanup still runs after the test's context ends.
package testenv

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Environment variable names. deps.sh writes the CAPSTREAM_TEST_* ones.
const (
	EnvRequireDeps    = "CAPSTREAM_TEST_REQUIRE_DEPS"
	EnvDevEnvFile     = "CAPSTREAM_DEV_ENV"
	EnvDevDir         = "CAPSTREAM_DEV_DIR"
	EnvClickHouseAddr = "CAPSTREAM_TEST_CLICKHOUSE_ADDR"
	// EnvClickHouseSecureAddr is the server's TLS native port, whose
	// certificate EnvTLSCA signs.
	EnvClickHouseSecureAddr = "CAPSTREAM_TEST_CLICKHOUSE_SECURE_ADDR"
	// EnvClickHousePassword is the default user's password (empty with an
	// older deps.sh, whose server has none).
	EnvClickHousePassword = "CAPSTREAM_TEST_CLICKHOUSE_PASSWORD"
	// EnvClickHouseSecure is 1 when EnvClickHouseAddr is a TLS port,
	// whose certificate EnvTLSCA signs.
	EnvClickHouseSecure = "CAPSTREAM_TEST_CLICKHOUSE_SECURE"
	// EnvClickHouseClientConfig is a clickhouse-client --config-file with
	// the address, TLS and password.
	EnvClickHouseClientConfig = "CAPSTREAM_TEST_CLICKHOUSE_CLIENT_CONFIG"
	EnvTLSCA                  = "CAPSTREAM_TEST_TLS_CA"
	EnvS3Endpoint             = "CAPSTREAM_TEST_S3_ENDPOINT"
	EnvS3AccessKey            = "CAPSTREAM_TEST_S3_ACCESS_KEY"
	EnvS3SecretKey            = "CAPSTREAM_TEST_S3_SECRET_KEY"
	EnvKubeconfig             = "CAPSTREAM_TEST_KUBECONFIG"
	defaultDevDir             = "/tmp/capstream-dev"
	defaultClickHouse         = "127.0.0.1:9000"
	cleanupTimeout            = 30 * time.Second
	probeTimeout              = 5 * time.Second
)

var (
	envOnce sync.Once
	envFile map[string]string
)

// EnvFilePath is where deps.sh writes the services' addresses.
func EnvFilePath() string {
	if p := os.Getenv(EnvDevEnvFile); p != "" {
		return p
	}
	dir := os.Getenv(EnvDevDir)
	if dir == "" {
		dir = defaultDevDir
	}
	return filepath.Join(dir, "env")
}

// Getenv returns a CAPSTREAM_TEST_* setting from the environment or, failing
// that, from the env file deps.sh wrote.
func Getenv(name string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	envOnce.Do(func() { envFile = readEnvFile(EnvFilePath()) })
	return envFile[name]
}

func readEnvFile(path string) map[string]string {
	m := map[string]string{}
	f, err := os.Open(path)
	if err != nil {
		return m
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok {
			m[k] = v
		}
	}
	return m
}

// RequireDeps reports whether unreachable services fail tests instead of
// skipping them.
func RequireDeps() bool { return os.Getenv(EnvRequireDeps) == "1" }

// probe caches one reachability check per service per test binary.
type probe struct {
	once sync.Once
	err  error
}

func (p *probe) check(fn func() error) error {
	p.once.Do(func() { p.err = fn() })
	return p.err
}

// unavailable skips or fails the test because service is not usable.
func unavailable(t testing.TB, service string, err error) {
	t.Helper()
	msg := fmt.Sprintf("%s unavailable: %v (start it with deploy/dev/deps.sh up)", service, err)
	if RequireDeps() {
		t.Fatalf("%s; %s=1 makes this a failure", msg, EnvRequireDeps)
	}
	t.Skip(msg)
}

// Require skips the test under -short; otherwise the caller checks the
// service and calls unavailable on failure.
func skipShort(t testing.TB, service string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("-short: skipping test that needs %s", service)
	}
}

// Eventually calls fn until it returns nil or timeout passes, then fails the
// test with fn's last error. Tests wait with it instead of sleeping.
func Eventually(t testing.TB, timeout time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	wait := 10 * time.Millisecond
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %v", timeout, err)
		}
		time.Sleep(wait)
		if wait < 200*time.Millisecond {
			wait *= 2
		}
	}
}
