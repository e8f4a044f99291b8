package pcapstore

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/capstream/capstream/internal/clients"
	"github.com/capstream/capstream/sink"
)

// Config configures the pcap sink.
type Config struct {
	// RunConfig holds consumer, gracePeriod and migrate.
	sink.RunConfig `yaml:",inline"`
	// S3 is the object store; the bucket must exist. It is not read from
	// this section: main fills it from the binary's top-level s3 section,
	// so its secrets have short override names.
	S3 clients.S3Config `yaml:"-"`
	// Prefix is the first part of every object key, without slashes at
	// either end. Default "capstream".
	Prefix string `yaml:"prefix"`
	// MaxObjectBytes completes an object when it reaches this size, in
	// bytes. Default 64 MiB.
	MaxObjectBytes int64 `yaml:"maxObjectBytes"`
	// MaxObjectAge completes an object this long (wall time) after it was
	// opened. Default 60s.
	MaxObjectAge time.Duration `yaml:"maxObjectAge"`
	// StopAfter completes an object whose interface sent no batch for this
	// long. A stopped capture's last object is completed by the producer's
	// last batch at once; this is the fallback when that never comes (the
	// producer died, the interface vanished). Default 15s.
	StopAfter time.Duration `yaml:"stopAfter"`
	// MaxBufferedBytes bounds the memory held by objects over all
	// interfaces, open or uploading; beyond it the largest open object is
	// completed early, and while uploads hold it all, no batch is taken.
	// With the pull buffer it is most of the sink's memory. Default 96 MiB.
	MaxBufferedBytes int64 `yaml:"maxBufferedBytes"`
	// PartSize: an object up to this size is uploaded in one PUT; a larger
	// one in parallel multipart parts of this size. One PUT costs the S3
	// server least (versitygw writes multipart parts to separate files and
	// joins them at completion), so the default covers maxObjectBytes.
	// Default 64 MiB.
	PartSize uint64 `yaml:"partSize"`
	// Uploaders is how many objects are uploaded at once, while the sink
	// keeps filling the next ones. Default 2.
	Uploaders int `yaml:"uploaders"`
	// DedupWindow is how far back completed objects are looked up when a
	// batch is redelivered; it must cover the packets stream's MaxAge.
	// Default 1h.
	DedupWindow time.Duration `yaml:"dedupWindow"`
	// StaleUploadAge: incomplete multipart uploads under Prefix older than
	// this are aborted at start and every few minutes. Default 15m.
	StaleUploadAge time.Duration `yaml:"staleUploadAge"`
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{
		RunConfig:        sink.DefaultRunConfig(30 * time.Second),
		Prefix:           "capstream",
		MaxObjectBytes:   64 << 20,
		MaxObjectAge:     time.Minute,
		StopAfter:        15 * time.Second,
		MaxBufferedBytes: 96 << 20,
		PartSize:         64 << 20,
		Uploaders:        2,
		DedupWindow:      time.Hour,
		StaleUploadAge:   15 * time.Minute,
	}
}

// Validate returns every problem with c.
func (c Config) Validate() error {
	errs := []error{c.RunConfig.Validate(), c.S3.Validate()}
	if c.Prefix == "" || strings.HasPrefix(c.Prefix, "/") || strings.HasSuffix(c.Prefix, "/") {
		errs = append(errs, fmt.Errorf("prefix %q: want non-empty, without leading or trailing '/'", c.Prefix))
	}
	if c.MaxObjectBytes < 64<<10 || c.MaxObjectBytes > 1<<30 {
		errs = append(errs, fmt.Errorf("maxObjectBytes %d: want 64 KiB to 1 GiB", c.MaxObjectBytes))
	}
	if c.MaxObjectAge < time.Second {
		errs = append(errs, fmt.Errorf("maxObjectAge %s: want at least 1s", c.MaxObjectAge))
	}
	if c.StopAfter <= 0 {
		errs = append(errs, fmt.Errorf("stopAfter %s: must be positive", c.StopAfter))
	}
	if c.MaxBufferedBytes < c.MaxObjectBytes {
		errs = append(errs, fmt.Errorf("maxBufferedBytes %d: must hold at least one object of maxObjectBytes %d", c.MaxBufferedBytes, c.MaxObjectBytes))
	}
	if c.PartSize < 5<<20 {
		errs = append(errs, fmt.Errorf("partSize %d: S3 needs at least 5 MiB", c.PartSize))
	}
	if c.Uploaders < 1 || c.Uploaders > 16 {
		errs = append(errs, fmt.Errorf("uploaders %d: want 1 to 16", c.Uploaders))
	}
	if c.DedupWindow <= 0 {
		errs = append(errs, fmt.Errorf("dedupWindow %s: must be positive", c.DedupWindow))
	}
	if c.StaleUploadAge <= c.GracePeriod {
		errs = append(errs, fmt.Errorf("staleUploadAge %s: must exceed gracePeriod %s, or a live upload could be aborted", c.StaleUploadAge, c.GracePeriod))
	}
	return errors.Join(errs...)
}
