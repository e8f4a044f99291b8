// Package pipeline assembles the whole capstream pipeline in one process:
// an embedded JetStream server, the router (optional), one producer per
// node and both sinks, each on its own NATS connection as separate
// processes would be. It is the one assembly `capstream-dev`, the bench
// harness and the end-to-end tests start; the production binary never
// links it (internal/depcheck keeps nats-server out of cmd/capstream).
//
// Lifecycle: Start does the I/O a deployment does once (starts the server,
// creates the streams and both sinks' durables before any producer can
// publish, since CAPSTREAM_PACKETS has interest retention, opens the
// clients) and builds every component; Run runs them until its context
// ends and stops them in two stages: producers (and any Early component,
// such as a traffic simulator) first, so their last batches and reports
// are published while the router and the sinks still consume; then the
// router and the sinks, which complete their objects and flows. Close
// releases the connections and the server after Run has returned.
package pipeline

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/capstream/capstream/internal/clients"
	"github.com/capstream/capstream/internal/run"
	"github.com/capstream/capstream/producer"
	"github.com/capstream/capstream/producer/source"
	"github.com/capstream/capstream/router"
	"github.com/capstream/capstream/schemas"
	"github.com/capstream/capstream/sink"
	"github.com/capstream/capstream/sink/flowstore"
	"github.com/capstream/capstream/sink/pcapstore"
)

// ServerConfig configures the embedded JetStream server. It is a server's
// settings, not a client's: clients connect with clients.NATSConfig.
type ServerConfig struct {
	// Host is the client listener's address. Default 127.0.0.1.
	Host string `yaml:"host"`
	// Port is the client port; -1 picks a free one (see URL). Default -1.
	Port int `yaml:"port"`
	// StoreDir holds JetStream's files; empty means a temporary directory
	// removed by Close. Default empty.
	StoreDir string `yaml:"storeDir"`
	// PacketsMaxBytes bounds CAPSTREAM_PACKETS, in bytes. Default 1 GiB.
	PacketsMaxBytes int64 `yaml:"packetsMaxBytes"`
	// PacketsMaxAge bounds the age of unacked batches. Default 1h.
	PacketsMaxAge time.Duration `yaml:"packetsMaxAge"`
	// Anonymous accepts clients without credentials, with every
	// permission. Default false: each component connects as its own
	// identity (schemas.Identity) with a password made at start, and
	// anything else is refused. Anonymous logs a warning.
	Anonymous bool `yaml:"anonymous"`
	// MonitorPasswordFile receives the password of the monitor identity
	// (capstream-monitor: stream and consumer state, no messages), for
	// the nats CLI. Default: monitor.password in the store directory.
	MonitorPasswordFile string `yaml:"monitorPasswordFile"`
	// TLS is the server's certificate; clients (the components and the
	// nats CLI) verify it against TLS.CAFile. Required unless Plaintext.
	TLS ServerTLS `yaml:"tls"`
	// Plaintext serves without TLS, so passwords and captured packets
	// cross the loopback in clear text. Default false; it logs a warning.
	Plaintext bool `yaml:"plaintext"`
}

// ServerTLS is the embedded server's certificate and the CA that signed it.
type ServerTLS struct {
	// CertFile and KeyFile are the server certificate (its names must
	// include the host clients dial) and its key, PEM.
	CertFile string `yaml:"certFile"`
	KeyFile  string `yaml:"keyFile"`
	// CAFile is the CA clients verify the certificate against; with
	// VerifyClients, also the CA of the client certificates.
	CAFile string `yaml:"caFile"`
	// VerifyClients requires every client to present a certificate
	// signed by CAFile. Default false: identities are passwords.
	VerifyClients bool `yaml:"verifyClients"`
}

// DefaultServerConfig returns the defaults documented on ServerConfig.
func DefaultServerConfig() ServerConfig {
	l := schemas.DefaultPacketsStreamLimits()
	return ServerConfig{Host: "127.0.0.1", Port: -1, PacketsMaxBytes: l.MaxBytes, PacketsMaxAge: l.MaxAge}
}

// Validate checks the port and the stream limits.
func (c ServerConfig) Validate() error {
	var errs []error
	if c.Port < -1 || c.Port > 65535 {
		errs = append(errs, fmt.Errorf("nats.port %d: want -1 (any free port) to 65535", c.Port))
	}
	if err := c.Limits().Validate(); err != nil {
		errs = append(errs, fmt.Errorf("nats: %w", err))
	}
	if !c.Plaintext {
		if c.TLS.CertFile == "" || c.TLS.KeyFile == "" || c.TLS.CAFile == "" {
			errs = append(errs, errors.New("nats.tls: certFile, keyFile and caFile are required (deploy/dev/certs.sh makes them), or set nats.plaintext: true"))
		} else if _, err := c.serverTLS(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// serverTLS loads the server's TLS configuration.
func (c ServerConfig) serverTLS() (*tls.Config, error) {
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: c.TLS.CertFile, KeyFile: c.TLS.KeyFile, CaFile: c.TLS.CAFile, Verify: c.TLS.VerifyClients})
	if err != nil {
		return nil, fmt.Errorf("nats.tls (certFile %s, keyFile %s, caFile %s): %w", c.TLS.CertFile, c.TLS.KeyFile, c.TLS.CAFile, err)
	}
	return tc, nil
}

// client is how a component reaches a server started with c at url.
func (c ServerConfig) client(url string) clients.NATSConfig {
	if c.Plaintext {
		return clients.NATSConfig{URL: url}
	}
	return clients.NATSConfig{URL: strings.Replace(url, "nats://", "tls://", 1), TLS: clients.TLSConfig{CAFile: c.TLS.CAFile}}
}

// Limits are CAPSTREAM_PACKETS' limits as configured.
func (c ServerConfig) Limits() schemas.PacketsStreamLimits {
	l := schemas.DefaultPacketsStreamLimits()
	l.MaxBytes, l.MaxAge = c.PacketsMaxBytes, c.PacketsMaxAge
	return l
}

// Config is what the pipeline runs.
type Config struct {
	// Server is the embedded JetStream server.
	Server ServerConfig
	// Router, when set, runs the router (it needs Deps.Kube and
	// Deps.Dynamic); nil runs none, and whoever drives the pipeline
	// publishes the commands itself (the bench does). The router manages
	// CAPSTREAM_PACKETS with Server's limits.
	Router *router.Config
	// Producers are the producers to run, one per node, each with its
	// Node set.
	Producers []producer.Config
	// Pcap is the pcap sink; its S3 section is the S3 field below.
	Pcap pcapstore.Config
	// Flows is the flow sink.
	Flows flowstore.Config
	// ClickHouse is where both sinks write; each gets its own client.
	ClickHouse clients.ClickHouseConfig
	// S3 is where the pcap sink writes.
	S3 clients.S3Config
	// Identities are more users the server accepts besides the
	// components' (schemas.Identity), such as a harness's; Client
	// returns how they connect.
	Identities []schemas.Identity
}

// Deps are the pipeline's collaborators.
type Deps struct {
	// Logger is the process logger.
	Logger *slog.Logger
	// Registerer receives every component's metrics; each producer's carry
	// its node as a label, so several share one registry.
	Registerer prometheus.Registerer
	// Kube and Dynamic are the router's API clients (with Config.Router).
	Kube    kubernetes.Interface
	Dynamic dynamic.Interface
	// Openers, when set for a node, replace that producer's source (the
	// bench replays through its own opener).
	Openers map[string]source.Opener
	// Early are components run in the first stage beside the producers
	// and stopped with them, such as a traffic simulator.
	Early map[string]run.Component
}

// setupTimeout bounds the start-up steps that talk to the server (streams,
// durables).
const setupTimeout = time.Minute

// Pipeline is a started pipeline; see the package comment.
type Pipeline struct {
	log     *slog.Logger
	srv     *server.Server
	creds   *Credentials // nil when anonymous
	server  ServerConfig
	tempDir string
	conns   []*nats.Conn
	chConns []driver.Conn

	early map[string]run.Component
	late  map[string]run.Component
}

// Start starts the embedded server and builds every component; see the
// package comment. On error everything started is released.
func Start(ctx context.Context, cfg Config, deps Deps) (_ *Pipeline, err error) {
	if deps.Logger == nil || deps.Registerer == nil {
		return nil, errors.New("pipeline: logger and registerer are required")
	}
	if err := cfg.Server.Validate(); err != nil {
		return nil, err
	}
	p := &Pipeline{log: deps.Logger, server: cfg.Server, early: map[string]run.Component{}, late: map[string]run.Component{}}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	if !cfg.Server.Anonymous {
		nodes := make([]string, len(cfg.Producers))
		for i, pc := range cfg.Producers {
			nodes[i] = pc.Node
		}
		ids, err := pipelineIdentities(nodes)
		if err != nil {
			return nil, err
		}
		ids = append(ids, cfg.Identities...)
		if p.creds, err = NewCredentials(ids...); err != nil {
			return nil, err
		}
	}
	if err := p.startServer(cfg.Server); err != nil {
		return nil, err
	}
	url := p.URL()
	p.log.Info("embedded jetstream started", "url", url, "store", p.srv.StoreDir())
	if cfg.Server.Plaintext {
		p.log.Warn("nats.plaintext is set: passwords and captured packets cross to the embedded server in clear text")
	}
	if cfg.Server.Anonymous {
		p.log.Warn("nats.anonymous is set: any client that reaches the embedded server may publish commands and read every capture")
	} else if err := p.writeMonitorPassword(cfg.Server); err != nil {
		return nil, err
	}

	// The streams and durables are the router's to make, as in a cluster.
	setupNC, setupJS, err := p.connect(schemas.UserRouter)
	if err != nil {
		return nil, err
	}
	if err := setup(ctx, setupJS, cfg); err != nil {
		return nil, err
	}
	setupNC.Close()

	if cfg.Router != nil {
		_, js, err := p.connect(schemas.UserRouter)
		if err != nil {
			return nil, err
		}
		rcfg := *cfg.Router
		// The router keeps the server's stream limits rather than
		// applying its own defaults.
		l := cfg.Server.Limits()
		rcfg.PacketsStream = router.PacketsStreamConfig{Manage: true, MaxBytes: l.MaxBytes, MaxAge: l.MaxAge, Replicas: l.Replicas, Duplicates: l.Duplicates, Partitions: l.Partitions}
		r, err := router.New(rcfg, router.Deps{Logger: deps.Logger, Registerer: deps.Registerer, Kube: deps.Kube, Dynamic: deps.Dynamic, JetStream: js})
		if err != nil {
			return nil, err
		}
		p.late["router"] = r
	}
	s3, err := cfg.S3.Client()
	if err != nil {
		return nil, err
	}
	pcapCfg := cfg.Pcap
	pcapCfg.S3 = cfg.S3
	_, pcapJS, err := p.connect(schemas.UserPcapSink)
	if err != nil {
		return nil, err
	}
	pcapCH, err := p.clickhouse(cfg.ClickHouse)
	if err != nil {
		return nil, err
	}
	if p.late["sink-pcap"], err = pcapstore.New(pcapCfg, sink.Deps{Logger: deps.Logger, Registerer: deps.Registerer, JetStream: pcapJS, ClickHouse: pcapCH, S3: s3}); err != nil {
		return nil, err
	}
	_, flowsJS, err := p.connect(schemas.UserFlowSink)
	if err != nil {
		return nil, err
	}
	flowsCH, err := p.clickhouse(cfg.ClickHouse)
	if err != nil {
		return nil, err
	}
	if p.late["sink-flows"], err = flowstore.New(cfg.Flows, sink.Deps{Logger: deps.Logger, Registerer: deps.Registerer, JetStream: flowsJS, ClickHouse: flowsCH}); err != nil {
		return nil, err
	}
	for _, pc := range cfg.Producers {
		id, err := schemas.ProducerIdentity(pc.Node)
		if err != nil {
			return nil, err
		}
		nconf, err := p.Client(id.User)
		if err != nil {
			return nil, err
		}
		nc, err := nconf.Connect(producer.ConnOptions(deps.Logger)...)
		if err != nil {
			return nil, err
		}
		p.conns = append(p.conns, nc)
		prod, err := producer.New(pc, producer.Deps{
			Logger:     deps.Logger,
			Registerer: prometheus.WrapRegistererWith(prometheus.Labels{"node": pc.Node}, deps.Registerer),
			NATS:       nc,
			Opener:     deps.Openers[pc.Node],
		})
		if err != nil {
			return nil, err
		}
		p.early["producer-"+pc.Node] = prod
	}
	for name, c := range deps.Early {
		p.early[name] = c
	}
	return p, nil
}

// setup creates the streams and both sink durables before any producer
// runs: CAPSTREAM_PACKETS has interest retention, so a batch published
// before the sinks bound their consumers would be discarded.
func setup(ctx context.Context, js jetstream.JetStream, cfg Config) error {
	ctx, cancel := context.WithTimeout(ctx, setupTimeout)
	defer cancel()
	if err := schemas.EnsureStreams(ctx, js, cfg.Server.Limits()); err != nil {
		return err
	}
	if _, err := sink.Bind(ctx, js, schemas.PcapSinkConsumer(), cfg.Pcap.Consumer.AckWait); err != nil {
		return err
	}
	if _, err := sink.Bind(ctx, js, schemas.FlowSinkConsumer(), cfg.Flows.Consumer.AckWait); err != nil {
		return err
	}
	return nil
}

func (p *Pipeline) startServer(c ServerConfig) error {
	dir := c.StoreDir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "capstream-nats-"); err != nil {
			return fmt.Errorf("nats store dir: %w", err)
		}
		p.tempDir = dir
	}
	srv, err := StartServer(c, dir, p.creds)
	if err != nil {
		return err
	}
	p.srv = srv
	return nil
}

// StartServer starts an embedded JetStream server listening as c says, its
// store in dir, and waits until it takes connections. With creds it accepts
// only those users, each with its identity's permissions; nil accepts
// anyone (the bench's broker-only floor, which measures JetStream alone).
// The caller shuts it down.
func StartServer(c ServerConfig, dir string, creds *Credentials) (*server.Server, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("nats store dir %s: %w", dir, err)
	}
	opts := &server.Options{
		ServerName: "capstream-dev",
		Host:       c.Host,
		Port:       c.Port,
		JetStream:  true,
		StoreDir:   dir,
		NoLog:      true,
		// Signals are the caller's: it stops the pipeline in order.
		NoSigs: true,
	}
	if creds != nil {
		opts.Users = creds.users()
	}
	if !c.Plaintext {
		tc, err := c.serverTLS()
		if err != nil {
			return nil, err
		}
		opts.TLS, opts.TLSConfig, opts.TLSVerify, opts.TLSTimeout = true, tc, c.TLS.VerifyClients, 5
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("embedded nats on %s:%d: not ready after 10s", c.Host, c.Port)
	}
	return srv, nil
}

// Client is how the identity user (schemas.User*) connects to the embedded
// server: its password and inbox prefix, or no credentials when the server
// is anonymous.
func (p *Pipeline) Client(user string) (clients.NATSConfig, error) {
	c := p.server.client(p.URL())
	if p.creds == nil {
		c.Name = user
		return c, nil
	}
	return p.creds.Client(c, user)
}

// writeMonitorPassword leaves the monitor identity's password where the
// nats CLI can read it.
func (p *Pipeline) writeMonitorPassword(c ServerConfig) error {
	path := c.MonitorPasswordFile
	if path == "" {
		path = filepath.Join(p.srv.StoreDir(), "monitor.password")
	}
	mc, err := p.Client(schemas.UserMonitor)
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, []byte(mc.Password+"\n"), 0o600); err != nil {
		return fmt.Errorf("nats monitor password: %w", err)
	}
	p.log.Info("monitor the bus with the nats CLI",
		"command", fmt.Sprintf("nats --server %s%s --user %s --password \"$(cat %s)\" --inbox-prefix %s stream report", mc.URL, tlsFlag(mc), mc.User, path, mc.InboxPrefix))
	return nil
}

func tlsFlag(c clients.NATSConfig) string {
	if c.TLS.CAFile == "" {
		return ""
	}
	return " --tlsca " + c.TLS.CAFile
}

// connect opens one identity's connection; Close closes it.
func (p *Pipeline) connect(user string) (*nats.Conn, jetstream.JetStream, error) {
	nconf, err := p.Client(user)
	if err != nil {
		return nil, nil, err
	}
	nc, js, err := clients.JetStream(nconf)
	if err != nil {
		return nil, nil, err
	}
	p.conns = append(p.conns, nc)
	return nc, js, nil
}

func (p *Pipeline) clickhouse(c clients.ClickHouseConfig) (driver.Conn, error) {
	conn, err := c.Open()
	if err != nil {
		return nil, err
	}
	p.chConns = append(p.chConns, conn)
	return conn, nil
}

// URL is the embedded server's client URL.
func (p *Pipeline) URL() string { return p.srv.ClientURL() }

// Checks are every component's readiness, by name, for /readyz.
func (p *Pipeline) Checks() map[string]run.Check {
	checks := map[string]run.Check{}
	for _, stage := range []map[string]run.Component{p.early, p.late} {
		for name, c := range stage {
			checks[name] = c.Ready
		}
	}
	return checks
}

// Ready reports every component that is not ready yet, or nil.
func (p *Pipeline) Ready() error {
	var errs []error
	for name, check := range p.Checks() {
		if err := check(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// Run runs every component until ctx ends or one fails, then stops them
// in two stages (see the package comment). It returns nil after a clean
// stop.
func (p *Pipeline) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	lateCtx, lateCancel := context.WithCancel(context.WithoutCancel(gctx))
	defer lateCancel()
	var early sync.WaitGroup
	for _, c := range p.early {
		early.Add(1)
		g.Go(func() error {
			defer early.Done()
			return c.Run(gctx)
		})
	}
	for name, c := range p.late {
		g.Go(func() error {
			err := c.Run(lateCtx)
			if err != nil && lateCtx.Err() != nil {
				// Shutdown had begun: the component's own grace handling
				// is done, so its error is reported but does not turn a
				// requested stop into a failure.
				p.log.Warn("component ended with an error during shutdown", "component", name, "error", err)
				return nil
			}
			return err
		})
	}
	g.Go(func() error {
		<-gctx.Done()
		early.Wait()
		p.log.Info("producers stopped; stopping router and sinks")
		lateCancel()
		return nil
	})
	err := g.Wait()
	p.log.Info("pipeline stopped")
	return err
}

// Close closes the connections and shuts the server down; call it after
// Run has returned.
func (p *Pipeline) Close() {
	for _, nc := range p.conns {
		nc.Close()
	}
	for _, c := range p.chConns {
		_ = c.Close()
	}
	if p.srv != nil {
		p.srv.Shutdown()
		p.srv.WaitForShutdown()
	}
	if p.tempDir != "" {
		_ = os.RemoveAll(p.tempDir)
	}
}
