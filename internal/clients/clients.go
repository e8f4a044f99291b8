// Package clients is the one place capstream builds its clients for NATS
// (JetStream), ClickHouse and S3: one Config type each, with one
// constructor each, used by every service, the dev pipeline and the user
// commands. Each Config is a YAML section (`nats`, `clickhouse`, `s3`) and
// follows the project's override scheme: a service's setting is
// CAPSTREAM_<SERVICE>_<SECTION>_<FIELD> (CAPSTREAM_SINK_PCAP_S3_SECRETKEY)
// and a user command's is CAPSTREAM_<SECTION>_<FIELD>
// (CAPSTREAM_S3_SECRETKEY); see internal/config.
//
// Constructors do not block: ClickHouse and minio-go dial lazily, and the
// NATS connection retries in the background (RetryOnFailedConnect) so a
// service starts while NATS is still coming up and reports not ready
// meanwhile.
package clients

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATSConfig is how a component reaches NATS. At most one of CredsFile,
// User/Password, Token and TokenFile is set.
type NATSConfig struct {
	// URL is one or more comma-separated server URLs. Default
	// nats://127.0.0.1:4222.
	URL string `yaml:"url"`
	// Name is the connection name the server shows (`nats server report
	// connections`). Default the component's name, e.g. capstream-router.
	Name string `yaml:"name"`
	// CredsFile is a NATS credentials file (JWT and NKey seed).
	CredsFile string `yaml:"credsFile"`
	// User and Password authenticate with a user name.
	User     string `yaml:"user"`
	Password string `yaml:"password" secret:"true"`
	// Token authenticates with a token.
	Token string `yaml:"token" secret:"true"`
	// TokenFile authenticates with the token held in this file, read
	// again at every connect and reconnect: a projected service-account
	// token that the kubelet rotates (deploy/k8s producers, checked by
	// `capstream nats-auth`). A refused token is retried at the next
	// reconnect rather than closing the connection for good, since the
	// file may hold a fresh one by then.
	TokenFile string `yaml:"tokenFile"`
	// TLS is used for tls:// URLs, and for every URL once any of it is
	// set.
	TLS TLSConfig `yaml:"tls"`
	// InboxPrefix replaces _INBOX as the prefix of the connection's reply
	// subjects, so a server can let each identity read its own replies
	// only (schemas.Identity). Default empty: _INBOX.
	InboxPrefix string `yaml:"inboxPrefix"`
	// Plaintext lets a service connect without TLS (a nats:// URL and no
	// tls section), so its credentials and the captured packets cross the
	// network in clear text. Default false: a service refuses to start
	// that way. It logs a warning.
	Plaintext bool `yaml:"plaintext"`
	// Anonymous lets a service connect without credentials. Default
	// false: a service refuses to start without credsFile, user/password
	// or token. It logs a warning.
	Anonymous bool `yaml:"anonymous"`
}

// Secured reports what a service's connection lacks of TLS and
// credentials, unless Plaintext or Anonymous allow it explicitly.
func (c NATSConfig) Secured() error {
	var errs []error
	if !c.secure() && !c.Plaintext {
		errs = append(errs, fmt.Errorf("nats: %s is not TLS: use a tls:// URL with nats.tls.caFile (the CA of the server's certificate), or set nats.plaintext: true to send credentials and packets in clear text", RedactURL(c.URL)))
	}
	if !c.hasCredentials() && !c.Anonymous {
		errs = append(errs, errors.New("nats: no credentials: set nats.credsFile, nats.tokenFile, or nats.user with nats.password from the environment, or nats.anonymous: true"))
	}
	return errors.Join(errs...)
}

func (c NATSConfig) hasCredentials() bool {
	return c.CredsFile != "" || c.User != "" || c.Password != "" || c.Token != "" || c.TokenFile != ""
}

// Warnings are the lines a service logs at start about how insecure this
// connection is allowed to be.
func (c NATSConfig) Warnings() []string {
	w := []string{c.TLS.Warning("nats.tls")}
	if c.Plaintext && !c.secure() {
		w = append(w, "nats.plaintext is set: credentials and captured packets cross the network to NATS in clear text")
	}
	if c.Anonymous && !c.hasCredentials() {
		w = append(w, "nats.anonymous is set: connecting to NATS without credentials")
	}
	return w
}

// secure reports whether the connection uses TLS.
func (c NATSConfig) secure() bool {
	return c.TLS.Set() || strings.Contains(c.URL, "tls://")
}

// DefaultNATSConfig is a local server reached as name.
func DefaultNATSConfig(name string) NATSConfig {
	return NATSConfig{URL: nats.DefaultURL, Name: name}
}

// Validate checks that a server is named and at most one kind of
// credential is set.
func (c NATSConfig) Validate() error {
	var errs []error
	if c.URL == "" {
		errs = append(errs, errors.New("nats.url: required"))
	}
	kinds := 0
	for _, set := range []bool{c.CredsFile != "", c.User != "" || c.Password != "", c.Token != "", c.TokenFile != ""} {
		if set {
			kinds++
		}
	}
	if kinds > 1 {
		errs = append(errs, errors.New("nats: set only one of credsFile, user/password, token and tokenFile"))
	}
	if c.TokenFile != "" {
		if _, err := readToken(c.TokenFile); err != nil {
			errs = append(errs, fmt.Errorf("nats.tokenFile: %w", err))
		}
	}
	if c.Anonymous && kinds > 0 {
		errs = append(errs, errors.New("nats.anonymous is set together with credentials: drop one"))
	}
	if c.Plaintext && c.secure() {
		errs = append(errs, errors.New("nats.plaintext is set but the URL or nats.tls asks for TLS: drop one"))
	}
	if c.TLS.Set() {
		errs = append(errs, c.TLS.Validate("nats.tls"))
	}
	if c.InboxPrefix != "" && (strings.ContainsAny(c.InboxPrefix, " \t\r\n*>") || strings.HasPrefix(c.InboxPrefix, ".") || strings.HasSuffix(c.InboxPrefix, ".")) {
		errs = append(errs, fmt.Errorf("nats.inboxPrefix %q: want subject tokens without wildcards, e.g. _INBOX_capstream-router", c.InboxPrefix))
	}
	return errors.Join(errs...)
}

// Options are the connection options every component uses: its name, its
// credentials and TLS, reconnecting forever, and starting even while no
// server answers yet. extra come last and may override them.
func (c NATSConfig) Options(extra ...nats.Option) ([]nats.Option, error) {
	opts := []nats.Option{
		nats.Name(c.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.RetryOnFailedConnect(true),
	}
	if c.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(c.InboxPrefix))
	}
	if c.secure() {
		tc, err := c.TLS.Config("nats.tls")
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.Secure(tc))
	}
	switch {
	case c.CredsFile != "":
		opts = append(opts, nats.UserCredentials(c.CredsFile))
	case c.User != "" || c.Password != "":
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	case c.Token != "":
		opts = append(opts, nats.Token(strings.TrimSpace(c.Token)))
	case c.TokenFile != "":
		// An unreadable file sends no token: the server refuses the
		// attempt and the next reconnect reads the file again.
		path := c.TokenFile
		opts = append(opts, nats.TokenHandler(func() string { tok, _ := readToken(path); return tok }),
			nats.IgnoreAuthErrorAbort())
	}
	return append(opts, extra...), nil
}

// maxTokenFileBytes bounds a token file: a service-account token is a
// JWT of a few KiB.
const maxTokenFileBytes = 16 << 10

// readToken is the token in a file, without surrounding white space.
func readToken(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxTokenFileBytes+1))
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > maxTokenFileBytes {
		return "", fmt.Errorf("%s: larger than %d bytes", path, maxTokenFileBytes)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("%s: empty", path)
	}
	return tok, nil
}

// Connect returns a connection to NATS; with RetryOnFailedConnect it
// returns at once even when no server answers yet, and keeps trying. Over
// TLS it first makes one attempt of its own: a server whose certificate
// does not verify is a setting to fix, not an outage to wait out, so that
// fails at start, naming the CA.
func (c NATSConfig) Connect(extra ...nats.Option) (*nats.Conn, error) {
	opts, err := c.Options(extra...)
	if err != nil {
		return nil, err
	}
	if c.secure() {
		nc, err := nats.Connect(c.URL, append(opts, nats.RetryOnFailedConnect(false), nats.Timeout(5*time.Second))...)
		if err == nil {
			return nc, nil
		}
		if cerr := certError("nats.tls", c.TLS, err); cerr != err {
			return nil, fmt.Errorf("connect to nats %s: %w", RedactURL(c.URL), cerr)
		}
	}
	nc, err := nats.Connect(c.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to nats %s: %w", RedactURL(c.URL), err)
	}
	return nc, nil
}

// RedactURL drops credentials from a URL list, for logs and errors.
func RedactURL(u string) string {
	parts := strings.Split(u, ",")
	for i, s := range parts {
		if at := strings.LastIndex(s, "@"); at >= 0 {
			if scheme := strings.Index(s, "://"); scheme >= 0 && scheme < at {
				parts[i] = s[:scheme+3] + "REDACTED" + s[at:]
			}
		}
	}
	return strings.Join(parts, ",")
}

// ClickHouseConfig is how a component reaches ClickHouse over the native
// protocol (HTTP does not work with 18.16).
type ClickHouseConfig struct {
	// Addr is host:port of the native protocol. Default 127.0.0.1:9440
	// (the secure port).
	Addr string `yaml:"addr"`
	// Database holds the flows and pcap_objects tables. Default "default".
	Database string `yaml:"database"`
	// Username. Default "default".
	Username string `yaml:"username"`
	// Password, usually from the environment (…_CLICKHOUSE_PASSWORD).
	Password string `yaml:"password" secret:"true"`
	// DialTimeout bounds one connection attempt. Default 10s.
	DialTimeout time.Duration `yaml:"dialTimeout"`
	// ReadTimeout bounds one query's wait for the server. Default 1m.
	ReadTimeout time.Duration `yaml:"readTimeout"`
	// Secure speaks TLS to the server's secure native port
	// (tcp_port_secure, 9440 by convention). Default true; false sends the
	// password and every row in clear text, and logs a warning. It is
	// implied by any TLS setting.
	Secure bool `yaml:"secure"`
	// TLS says which CA verifies the server and which client certificate
	// to present.
	TLS TLSConfig `yaml:"tls"`
}

// Warnings are the lines a service logs at start about how insecure this
// connection is allowed to be.
func (c ClickHouseConfig) Warnings() []string {
	if !c.Secure && !c.TLS.Set() {
		return []string{"clickhouse.secure is false: the password and every row cross the network in clear text"}
	}
	return []string{c.TLS.Warning("clickhouse.tls")}
}

// DefaultClickHouseConfig returns a local server's settings.
func DefaultClickHouseConfig() ClickHouseConfig {
	return ClickHouseConfig{Addr: "127.0.0.1:9440", Database: "default", Username: "default", DialTimeout: 10 * time.Second, ReadTimeout: time.Minute, Secure: true}
}

// Validate checks the required fields.
func (c ClickHouseConfig) Validate() error {
	var errs []error
	if c.Addr == "" {
		errs = append(errs, errors.New("clickhouse.addr: required"))
	}
	if c.Database == "" {
		errs = append(errs, errors.New("clickhouse.database: required"))
	}
	if c.DialTimeout <= 0 {
		errs = append(errs, fmt.Errorf("clickhouse.dialTimeout %s: must be positive", c.DialTimeout))
	}
	if c.ReadTimeout <= 0 {
		errs = append(errs, fmt.Errorf("clickhouse.readTimeout %s: must be positive", c.ReadTimeout))
	}
	if c.TLS.Set() {
		errs = append(errs, c.TLS.Validate("clickhouse.tls"))
	}
	return errors.Join(errs...)
}

// Open returns a client; clickhouse-go dials lazily, so this does no I/O.
// No settings are sent: 18.16 and current servers disagree on several.
func (c ClickHouseConfig) Open() (driver.Conn, error) {
	opts := &clickhouse.Options{
		Addr:        []string{c.Addr},
		Auth:        clickhouse.Auth{Database: c.Database, Username: c.Username, Password: c.Password},
		DialTimeout: c.DialTimeout,
		ReadTimeout: c.ReadTimeout,
	}
	if c.Secure || c.TLS.Set() {
		tc, err := c.TLS.Config("clickhouse.tls")
		if err != nil {
			return nil, err
		}
		opts.TLS = tc
	}
	conn, err := clickhouse.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("open clickhouse %s: %w", c.Addr, err)
	}
	return conn, nil
}

// S3Config is how a component reaches the object store.
type S3Config struct {
	// Endpoint is host:port of the S3 API. Required.
	Endpoint string `yaml:"endpoint"`
	// Bucket holds the pcap objects. Default "capstream".
	Bucket string `yaml:"bucket"`
	// Region, if the server needs one. Default empty.
	Region string `yaml:"region"`
	// Secure selects HTTPS. Default true; false sends every object in
	// clear text, and logs a warning.
	Secure bool `yaml:"secure"`
	// AccessKey, usually from the environment (…_S3_ACCESSKEY).
	AccessKey string `yaml:"accessKey" secret:"true"`
	// SecretKey, usually from the environment (…_S3_SECRETKEY).
	SecretKey string `yaml:"secretKey" secret:"true"`
	// TLS says which CA verifies the server (with Secure) and which
	// client certificate to present.
	TLS TLSConfig `yaml:"tls"`
}

// DefaultS3Config returns the default bucket and no endpoint.
func DefaultS3Config() S3Config { return S3Config{Bucket: "capstream", Secure: true} }

// Warnings are the lines a service logs at start about how insecure this
// connection is allowed to be.
func (c S3Config) Warnings() []string {
	if !c.Secure {
		return []string{"s3.secure is false: objects, which hold captured packets, cross the network in clear text"}
	}
	return []string{c.TLS.Warning("s3.tls")}
}

// Validate checks the required fields.
func (c S3Config) Validate() error {
	var errs []error
	if c.Endpoint == "" {
		errs = append(errs, errors.New("s3.endpoint: required"))
	}
	if c.Bucket == "" {
		errs = append(errs, errors.New("s3.bucket: required"))
	}
	if c.TLS.Set() {
		if !c.Secure {
			errs = append(errs, errors.New("s3.tls is set but s3.secure is false: the TLS settings would not be used"))
		}
		errs = append(errs, c.TLS.Validate("s3.tls"))
	}
	return errors.Join(errs...)
}

// Client returns a minio-go client; it does no I/O.
func (c S3Config) Client() (*minio.Client, error) {
	opts := &minio.Options{
		Creds:  credentials.NewStaticV4(c.AccessKey, c.SecretKey, ""),
		Secure: c.Secure,
		Region: c.Region,
	}
	if c.Secure && c.TLS.Set() {
		tc, err := c.TLS.Config("s3.tls")
		if err != nil {
			return nil, err
		}
		tr, err := minio.DefaultTransport(true)
		if err != nil {
			return nil, fmt.Errorf("s3 transport: %w", err)
		}
		tr.TLSClientConfig = tc
		opts.Transport = tr
	}
	cl, err := minio.New(c.Endpoint, opts)
	if err != nil {
		return nil, fmt.Errorf("s3 client %s: %w", c.Endpoint, err)
	}
	return cl, nil
}

// Check makes one request for the bucket, for --check and a service's
// start: its error says which setting is wrong (the CA, the keys, the
// bucket).
func (c S3Config) Check(ctx context.Context) error {
	cl, err := c.Client()
	if err != nil {
		return err
	}
	ok, err := cl.BucketExists(ctx, c.Bucket)
	if err != nil {
		return fmt.Errorf("s3 %s: %w", c.Endpoint, certError("s3.tls", c.TLS, err))
	}
	if !ok {
		return fmt.Errorf("s3 %s: bucket %s does not exist", c.Endpoint, c.Bucket)
	}
	return nil
}

// Check opens a client and pings the server once, with the same purpose
// as S3Config.Check.
func (c ClickHouseConfig) Check(ctx context.Context) error {
	conn, err := c.Open()
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.Ping(ctx); err != nil {
		return fmt.Errorf("clickhouse %s: %w", c.Addr, certError("clickhouse.tls", c.TLS, err))
	}
	return nil
}

// JetStream connects to NATS as c and returns the connection with a
// JetStream client on it; the caller closes the connection.
func JetStream(c NATSConfig, opts ...jetstream.JetStreamOpt) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := c.Connect()
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc, opts...)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return nc, js, nil
}
