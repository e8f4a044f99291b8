package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// clusterReadyTimeout bounds the wait for a (re)started cluster member to
// join the meta group, which takes one election at worst (the server's
// election timeout is 4 to 9 s).
const clusterReadyTimeout = 30 * time.Second

// JetStreamCluster is n embedded nats-servers with JetStream, routed to each
// other on loopback as one JetStream cluster, private to one test. Each
// server has its own store; Stop and Start take one down and bring it back
// on the same ports with the same store, as a restarted pod would be.
type JetStreamCluster struct {
	// Servers are the members, in the order of URLs.
	Servers []*NATSServer
	// Conn and JS are a client connection made for the test's
	// convenience, with every member's URL: it fails over and reconnects
	// forever.
	Conn *nats.Conn
	JS   jetstream.JetStream
}

// NATSCluster starts n servers (3 for R3 streams) clustered with routes,
// waits until JetStream has a meta leader and every member is current, and
// connects a client. All stop in t.Cleanup.
func NATSCluster(t testing.TB, n int) *JetStreamCluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("nats cluster of %d servers", n)
	}
	// Routes name every member's cluster port up front, so the ports are
	// reserved before any server starts; each member then keeps its
	// ports across restarts.
	ports := freePorts(t, 2*n)
	routes := make([]*url.URL, n)
	for i := range n {
		routes[i] = &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", ports[n+i])}
	}
	c := &JetStreamCluster{}
	name := "capstream-test-" + randomHex(4)
	for i := range n {
		s := &NATSServer{StoreDir: t.TempDir()}
		s.opts = server.Options{
			ServerName: fmt.Sprintf("n%d", i+1),
			Host:       "127.0.0.1",
			Port:       ports[i],
			JetStream:  true,
			StoreDir:   s.StoreDir,
			NoLog:      true,
			NoSigs:     true,
			Cluster:    server.ClusterOpts{Name: name, Host: "127.0.0.1", Port: ports[n+i]},
			Routes:     routes,
		}
		c.Servers = append(c.Servers, s)
	}
	t.Cleanup(func() {
		if c.Conn != nil {
			c.Conn.Close()
		}
		for _, s := range c.Servers {
			s.Stop()
		}
	})
	for _, s := range c.Servers {
		if err := s.Start(); err != nil {
			t.Fatalf("start nats-server %s: %v", s.opts.ServerName, err)
		}
	}
	if err := c.waitReady(); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(c.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatalf("connect to embedded nats cluster: %v", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream client: %v", err)
	}
	c.Conn, c.JS = nc, js
	return c
}

// freePorts reserves n distinct loopback ports by listening on them at
// once, then releases them for the servers to bind.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	ports := make([]int, n)
	for i := range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("reserve a port: %v", err)
		}
		ls = append(ls, l)
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports
}

// URL is every member's client URL, comma-separated, the form nats.Connect
// takes: a client given it fails over to another member when its own
// stops, and finds a restarted one again.
func (c *JetStreamCluster) URL() string {
	return strings.Join(c.URLs(), ",")
}

// URLs are the members' client URLs, in the order of Servers. They stay
// valid across Stop and Start.
func (c *JetStreamCluster) URLs() []string {
	out := make([]string, len(c.Servers))
	for i, s := range c.Servers {
		out[i] = fmt.Sprintf("nats://%s:%d", s.opts.Host, s.opts.Port)
	}
	return out
}

// Name is the server name of member i, as stream info reports leaders
// and replicas.
func (c *JetStreamCluster) Name(i int) string { return c.Servers[i].opts.ServerName }

// Index returns the member named name, or -1.
func (c *JetStreamCluster) Index(name string) int {
	for i, s := range c.Servers {
		if s.opts.ServerName == name {
			return i
		}
	}
	return -1
}

// StreamLeader returns the index of the member leading stream, asking the
// JetStream API ($JS.API.STREAM.INFO, its cluster section) and waiting up
// to timeout while the stream has no leader (an election).
func (c *JetStreamCluster) StreamLeader(ctx context.Context, stream string, timeout time.Duration) (int, error) {
	deadline := time.Now().Add(timeout)
	for {
		i, err := c.streamLeader(ctx, stream)
		if err == nil {
			return i, nil
		}
		if time.Now().After(deadline) {
			return -1, err
		}
		select {
		case <-ctx.Done():
			return -1, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (c *JetStreamCluster) streamLeader(ctx context.Context, stream string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := c.JS.Stream(ctx, stream)
	if err != nil {
		return -1, fmt.Errorf("stream %s info: %w", stream, err)
	}
	info := st.CachedInfo()
	if info.Cluster == nil || info.Cluster.Leader == "" {
		return -1, fmt.Errorf("stream %s: no leader", stream)
	}
	i := c.Index(info.Cluster.Leader)
	if i < 0 || !c.Servers[i].running() {
		return -1, fmt.Errorf("stream %s: leader %q is not a running member", stream, info.Cluster.Leader)
	}
	return i, nil
}

// WaitCurrent waits until stream has a leader and every replica is online
// and current with it: after a member's restart, the point from which the
// stream survives losing another member.
func (c *JetStreamCluster) WaitCurrent(ctx context.Context, stream string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := c.current(ctx, stream)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (c *JetStreamCluster) current(ctx context.Context, stream string) error {
	if _, err := c.streamLeader(ctx, stream); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := c.JS.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("stream %s info: %w", stream, err)
	}
	info := st.CachedInfo()
	if info.Cluster == nil || len(info.Cluster.Replicas) != info.Config.Replicas-1 {
		return fmt.Errorf("stream %s: replicas %+v, want %d besides the leader", stream, info.Cluster, info.Config.Replicas-1)
	}
	for _, p := range info.Cluster.Replicas {
		if !p.Current || p.Offline {
			return fmt.Errorf("stream %s: replica %s not current (offline %t, lag %d)", stream, p.Name, p.Offline, p.Lag)
		}
	}
	return nil
}

// MoveConsumerLeader makes member to the leader of a stream's consumer
// ($JS.API.CONSUMER.LEADER.STEPDOWN with a preferred placement,
// nats-server 2.11+) and waits until stream info says so, so a test can
// put the consumer's leader where it will kill it.
func (c *JetStreamCluster) MoveConsumerLeader(ctx context.Context, stream, consumer string, to int) error {
	leader := func() (string, error) {
		cons, err := c.JS.Consumer(ctx, stream, consumer)
		if err != nil {
			return "", err
		}
		if ci := cons.CachedInfo().Cluster; ci != nil {
			return ci.Leader, nil
		}
		return "", nil
	}
	want := c.Name(to)
	deadline := time.Now().Add(clusterReadyTimeout)
	for {
		got, err := leader()
		if err == nil && got == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("consumer %s leader %q, want %s (%v)", consumer, got, want, err)
		}
		if err == nil && got != "" {
			req := fmt.Appendf(nil, `{"placement":{"preferred":%q}}`, want)
			rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, _ = c.Conn.RequestWithContext(rctx, fmt.Sprintf("$JS.API.CONSUMER.LEADER.STEPDOWN.%s.%s", stream, consumer), req)
			cancel()
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// MetaLeader returns the index of the member leading the JetStream meta
// group (the one that creates streams and consumers), or -1 during an
// election.
func (c *JetStreamCluster) MetaLeader() int {
	for i, s := range c.Servers {
		if s.running() && s.Server.JetStreamIsLeader() {
			return i
		}
	}
	return -1
}

// Stop shuts member i down the way a killed pod goes: its clients are cut
// off, its raft groups stop answering and nothing steps down first (that
// is lame-duck mode, which a crash does not get).
func (c *JetStreamCluster) Stop(i int) {
	c.Servers[i].Stop()
	c.Servers[i].Server = nil
}

// Start brings member i back on its ports with its store and waits until
// it is a current member of the meta group again.
func (c *JetStreamCluster) Start(i int) error {
	if err := c.Servers[i].Start(); err != nil {
		return err
	}
	return c.waitReady()
}

// waitReady waits until the running members agree on a meta leader and
// each is current with it.
func (c *JetStreamCluster) waitReady() error {
	deadline := time.Now().Add(clusterReadyTimeout)
	for {
		err := c.ready()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nats cluster not ready after %s: %w", clusterReadyTimeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *JetStreamCluster) ready() error {
	leader := false
	for _, s := range c.Servers {
		if !s.running() {
			continue
		}
		if s.Server.JetStreamIsLeader() {
			leader = true
		}
		if !s.Server.JetStreamIsCurrent() {
			return fmt.Errorf("%s: jetstream not current", s.opts.ServerName)
		}
	}
	if !leader {
		return errors.New("no jetstream meta leader")
	}
	return nil
}

func (s *NATSServer) running() bool { return s.Server != nil && s.Server.Running() }
