package testenv

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATSServer is an embedded nats-server with JetStream, private to one test.
type NATSServer struct {
	Server   *server.Server
	URL      string
	StoreDir string
	// Conn and JS are a client connection made for the test's convenience.
	// It reconnects forever, so it survives Stop/Start.
	Conn *nats.Conn
	JS   jetstream.JetStream

	opts server.Options
}

// NATS starts an in-process JetStream server on a free port with its store
// in a temp dir, and connects a client. Both stop in t.Cleanup.
func NATS(t testing.TB) *NATSServer {
	t.Helper()
	s := &NATSServer{StoreDir: t.TempDir()}
	s.opts = server.Options{
		Host:      "127.0.0.1",
		Port:      -1,
		JetStream: true,
		StoreDir:  s.StoreDir,
		NoLog:     true,
		NoSigs:    true,
	}
	if err := s.Start(); err != nil {
		t.Fatalf("start nats-server: %v", err)
	}
	// Pin the port so a restarted server comes back on the URL clients know.
	s.opts.Port = s.Server.Addr().(*net.TCPAddr).Port
	nc, err := nats.Connect(s.URL, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		s.Stop()
		t.Fatalf("connect to embedded nats: %v", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream client: %v", err)
	}
	s.Conn, s.JS = nc, js
	t.Cleanup(func() {
		nc.Close()
		s.Stop()
	})
	return s
}

// Start starts the server (again, after Stop) with the same port and store,
// so tests can take JetStream away and bring it back.
func (s *NATSServer) Start() error {
	opts := s.opts
	srv, err := server.NewServer(&opts)
	if err != nil {
		return fmt.Errorf("new nats server: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return fmt.Errorf("nats server not ready on %s", srv.ClientURL())
	}
	s.Server, s.URL = srv, srv.ClientURL()
	return nil
}

// Stop shuts the server down and waits until it is gone.
func (s *NATSServer) Stop() {
	if s.Server == nil {
		return
	}
	s.Server.Shutdown()
	s.Server.WaitForShutdown()
}

// Connect opens a connection of the test's own to the server, as a
// component would have, with a JetStream client on it; it reconnects
// forever (surviving Stop/Start) and closes when the test ends, after the
// cleanups registered later (a component started afterwards stops first).
func (s *NATSServer) Connect(t testing.TB, name string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(s.URL, nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatalf("connect to embedded nats: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream client: %v", err)
	}
	return nc, js
}
