package sink

import (
	"errors"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// ConsumerConfig tunes how a sink pulls from its durable consumer.
type ConsumerConfig struct {
	// PullMaxBytes bounds the batches the client buffers ahead of the sink,
	// in bytes. It must stay under 64 MiB or the client drops messages as
	// a slow consumer. Default 16 MiB.
	PullMaxBytes int `yaml:"pullMaxBytes"`
	// AckWait, when set, overrides the schema's AckWait of the durable.
	// Tests shorten it; production leaves it 0 (2m). Default 0.
	AckWait time.Duration `yaml:"ackWait"`
}

// DefaultConsumerConfig returns a 16 MiB pull buffer and the schema's
// AckWait.
func DefaultConsumerConfig() ConsumerConfig {
	return ConsumerConfig{PullMaxBytes: 16 << 20}
}

// Validate checks the bounds.
func (c ConsumerConfig) Validate() error {
	var errs []error
	if c.PullMaxBytes < 1<<20 || c.PullMaxBytes >= 64<<20 {
		errs = append(errs, fmt.Errorf("consumer.pullMaxBytes %d: want 1 MiB to under 64 MiB", c.PullMaxBytes))
	}
	if c.AckWait < 0 || (c.AckWait > 0 && c.AckWait < time.Second) {
		errs = append(errs, fmt.Errorf("consumer.ackWait %s: want 0 or at least 1s", c.AckWait))
	}
	return errors.Join(errs...)
}

// ClickHouseConfig is how a sink reaches ClickHouse over the native
// protocol (HTTP does not work with 18.16).
type ClickHouseConfig struct {
	// Addr is host:port of the native protocol. Default 127.0.0.1:9000.
	Addr string `yaml:"addr"`
	// Database holds the flows and pcap_objects tables. Default "default".
	Database string `yaml:"database"`
	// Username. Default "default".
	Username string `yaml:"username"`
	// Password, usually from CAPSTREAM_SINK_*_CLICKHOUSE_PASSWORD.
	Password string `yaml:"password" secret:"true"`
	// DialTimeout bounds one connection attempt. Default 10s.
	DialTimeout time.Duration `yaml:"dialTimeout"`
}

// DefaultClickHouseConfig returns a local server's settings.
func DefaultClickHouseConfig() ClickHouseConfig {
	return ClickHouseConfig{Addr: "127.0.0.1:9000", Database: "default", Username: "default", DialTimeout: 10 * time.Second}
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
	return errors.Join(errs...)
}

// Open returns a client; clickhouse-go dials lazily, so this does no I/O.
// No settings are sent: 18.16 and current servers disagree on several.
func (c ClickHouseConfig) Open() (driver.Conn, error) {
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr:        []string{c.Addr},
		Auth:        clickhouse.Auth{Database: c.Database, Username: c.Username, Password: c.Password},
		DialTimeout: c.DialTimeout,
		ReadTimeout: time.Minute,
	})
	if err != nil {
		return nil, fmt.Errorf("open clickhouse %s: %w", c.Addr, err)
	}
	return conn, nil
}

// S3Config is how the pcap sink reaches the object store.
type S3Config struct {
	// Endpoint is host:port of the S3 API. Required.
	Endpoint string `yaml:"endpoint"`
	// Bucket receives the objects; it must exist. Required.
	Bucket string `yaml:"bucket"`
	// Region, if the server needs one. Default empty.
	Region string `yaml:"region"`
	// Secure selects HTTPS. Default false.
	Secure bool `yaml:"secure"`
	// AccessKey, usually from CAPSTREAM_SINK_PCAP_S3_ACCESS_KEY.
	AccessKey string `yaml:"accessKey" secret:"true"`
	// SecretKey, usually from CAPSTREAM_SINK_PCAP_S3_SECRET_KEY.
	SecretKey string `yaml:"secretKey" secret:"true"`
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
	return errors.Join(errs...)
}

// Client returns a minio-go client; it does no I/O.
func (c S3Config) Client() (*minio.Client, error) {
	cl, err := minio.New(c.Endpoint, &minio.Options{
		Creds:  credentials.NewStaticV4(c.AccessKey, c.SecretKey, ""),
		Secure: c.Secure,
		Region: c.Region,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 client %s: %w", c.Endpoint, err)
	}
	return cl, nil
}

// NATSConfig is the sinks' NATS connection.
type NATSConfig struct {
	// URL of the NATS server(s), comma-separated. Default
	// nats://127.0.0.1:4222.
	URL string `yaml:"url"`
	// Name is the connection name shown by the server. Default the sink's.
	Name string `yaml:"name"`
	// CredsFile is a NATS credentials file, if the server needs one.
	CredsFile string `yaml:"credsFile"`
}

// Validate checks the URL is set.
func (c NATSConfig) Validate() error {
	if c.URL == "" {
		return errors.New("nats.url: required")
	}
	return nil
}
