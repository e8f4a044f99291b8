// Package run holds the lifecycle helpers every capstream service shares:
// the logger, and one HTTP server for /healthz, /readyz and /metrics.
//
// Server.Run blocks until its context ends and then shuts the listener down
// within a short grace period; the caller runs it in the same errgroup as
// the components, so a failing listener stops the process and a stopping
// process stops the listener.
package run

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/capstream/capstream/internal/clients"
)

// HTTPConfig configures the health and metrics listener.
type HTTPConfig struct {
	// Listen is the host:port for /healthz, /readyz and /metrics; empty
	// disables the server. Default ":8080".
	Listen string `yaml:"listen"`
	// CertFile and KeyFile, when set, serve HTTPS with this certificate
	// (PEM; a mounted Secret): Prometheus then scrapes with the CA, and
	// nothing on the path reads the metrics. Both or neither. Default
	// empty: plain HTTP, as the kubelet's probes expect.
	CertFile string `yaml:"certFile"`
	KeyFile  string `yaml:"keyFile"`
}

// Validate checks the certificate pair, when one is set.
func (c HTTPConfig) Validate() error {
	_, err := c.tlsConfig()
	return err
}

// tlsConfig loads the server certificate; nil when plain HTTP.
func (c HTTPConfig) tlsConfig() (*tls.Config, error) {
	switch {
	case c.CertFile == "" && c.KeyFile == "":
		return nil, nil
	case c.CertFile == "" || c.KeyFile == "":
		return nil, errors.New("http: set both certFile and keyFile, or neither")
	}
	pair, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("http.certFile %s, keyFile %s: %w", c.CertFile, c.KeyFile, err)
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, nil
}

// DefaultHTTPConfig listens on :8080, the port the manifests probe.
func DefaultHTTPConfig() HTTPConfig { return HTTPConfig{Listen: ":8080"} }

// Check reports whether one part of the process is ready; nil means ready.
type Check func() error

// Server serves /healthz (the process is alive), /readyz (every Check
// passes) and /metrics (the registry) on one port.
type Server struct {
	cfg    HTTPConfig
	reg    *prometheus.Registry
	checks map[string]Check
	logger *slog.Logger
	ready  BoundAddr

	// why holds each failing check's last error, so each new reason is
	// logged once: /readyz itself says only which check fails, never why,
	// since anyone who reaches the port may call it.
	mu  sync.Mutex
	why map[string]string
}

// NewRegistry returns a registry with the Go runtime and process collectors,
// the one every binary hands to its components.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// NewServer checks the config; it does not listen.
func NewServer(cfg HTTPConfig, reg *prometheus.Registry, checks map[string]Check, logger *slog.Logger) *Server {
	return &Server{cfg: cfg, reg: reg, checks: checks, logger: logger, ready: NewBoundAddr()}
}

// Addr returns the address the server listens on once Run has bound it.
func (s *Server) Addr(ctx context.Context) (net.Addr, error) { return s.ready.Wait(ctx) }

// BoundAddr is the address a server listens on, published once by its
// Run for any number of callers to wait for.
type BoundAddr chan net.Addr

// NewBoundAddr returns a BoundAddr not set yet.
func NewBoundAddr() BoundAddr { return make(BoundAddr, 1) }

// Set publishes a; it is called once.
func (b BoundAddr) Set(a net.Addr) { b <- a }

// Wait returns the address once it is set, or ctx's error.
func (b BoundAddr) Wait(ctx context.Context) (net.Addr, error) {
	select {
	case a := <-b:
		b <- a
		return a, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Handler is the server's mux, for tests and for embedding.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		names := make([]string, 0, len(s.checks))
		for n := range s.checks {
			names = append(names, n)
		}
		sort.Strings(names)
		var b strings.Builder
		failed := false
		for _, n := range names {
			err := s.checks[n]()
			s.noteReadiness(n, err)
			if err != nil {
				failed = true
				fmt.Fprintf(&b, "%s: not ready\n", n)
			} else {
				fmt.Fprintf(&b, "%s: ok\n", n)
			}
		}
		if failed {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_, _ = io.WriteString(w, b.String())
	})
	mux.Handle("/metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{Registry: s.reg}))
	return mux
}

// noteReadiness logs a check's reason for not being ready when it changes,
// and its recovery.
func (s *Server) noteReadiness(name string, err error) {
	why := ""
	if err != nil {
		why = err.Error()
	}
	s.mu.Lock()
	if s.why == nil {
		s.why = map[string]string{}
	}
	prev := s.why[name]
	s.why[name] = why
	s.mu.Unlock()
	switch {
	case why != "" && why != prev:
		s.logger.Warn("not ready", "check", name, "error", why)
	case why == "" && prev != "":
		s.logger.Info("ready again", "check", name)
	}
}

// Run listens and serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	if s.cfg.Listen == "" {
		<-ctx.Done()
		return nil
	}
	tc, err := s.cfg.tlsConfig()
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", s.cfg.Listen, err)
	}
	if tc != nil {
		ln = tls.NewListener(ln, tc)
	}
	s.ready.Set(ln.Addr())
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	s.logger.Info("serving health and metrics", "addr", ln.Addr().String(), "tls", tc != nil)
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", s.cfg.Listen, err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutdown http: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// LogConfig configures the logger.
type LogConfig struct {
	// Level is debug, info, warn or error. Default info.
	Level string `yaml:"level"`
	// Format is json, text, or auto (text when stderr is a terminal, JSON
	// otherwise, as in a cluster). Default auto.
	Format string `yaml:"format"`
}

// DefaultLogConfig logs at info, text on a terminal and JSON otherwise.
func DefaultLogConfig() LogConfig { return LogConfig{Level: "info", Format: "auto"} }

// Validate checks the level and format names.
func (c LogConfig) Validate() error {
	var errs []error
	if _, err := parseLevel(c.Level); err != nil {
		errs = append(errs, err)
	}
	switch c.Format {
	case "", "auto", "json", "text":
	default:
		errs = append(errs, fmt.Errorf("log.format %q: want auto, json or text", c.Format))
	}
	return errors.Join(errs...)
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if s == "" {
		return slog.LevelInfo, nil
	}
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("log.level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// NewLogger builds the process logger writing to stderr.
func NewLogger(c LogConfig) *slog.Logger {
	level, _ := parseLevel(c.Level)
	opts := &slog.HandlerOptions{Level: level}
	format := c.Format
	if format == "" || format == "auto" {
		format = "json"
		if fi, err := os.Stderr.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			format = "text"
		}
	}
	if format == "text" {
		return slog.New(slog.NewTextHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, opts))
}

// ServiceSettings are the sections every service's configuration file
// starts with, inlined into its package's Settings: the logger, the health
// and metrics listener, and the NATS connection.
type ServiceSettings struct {
	// Log configures the logger.
	Log LogConfig `yaml:"log"`
	// HTTP is the health and metrics listener.
	HTTP HTTPConfig `yaml:"http"`
	// NATS is the NATS connection.
	NATS clients.NATSConfig `yaml:"nats"`
}

// DefaultServiceSettings returns the defaults; name is the NATS
// connection's name.
func DefaultServiceSettings(name string) ServiceSettings {
	return ServiceSettings{Log: DefaultLogConfig(), HTTP: DefaultHTTPConfig(), NATS: clients.DefaultNATSConfig(name)}
}

// Validate checks the shared sections. A service's NATS connection must
// use TLS and credentials unless nats.plaintext or nats.anonymous say
// otherwise.
func (s ServiceSettings) Validate() error {
	return errors.Join(s.Log.Validate(), s.HTTP.Validate(), s.NATS.Validate(), s.NATS.Secured())
}
