package router

import (
	"fmt"
	"testing"
	"time"

	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/schemas"
)

// TestRouterOnCluster: on a 3-node JetStream cluster, the router's term
// start creates the three streams with the replicas it is configured with
// (3), and a capture created while the leader of CAPSTREAM_COMMANDS is
// down still gets its command: the router rides out the election.
func TestRouterOnCluster(t *testing.T) {
	kube := testenv.Kube(t)
	cl := testenv.NATSCluster(t, 3)
	h := &harness{t: t, kube: kube, nats: &testenv.NATSServer{URL: cl.URL(), Conn: cl.Conn, JS: cl.JS}, ns: kube.Namespace(t, nil)}
	h.rec = newRecorder(t, cl.Conn, h.ns)
	h.pod("p", "node-1", nil)
	h.start(func(c *Config) {
		c.PacketsStream.Replicas, c.CommandsStream.Replicas, c.StatusStream.Replicas = 3, 3, 3
	})
	ctx := t.Context()
	testenv.Eventually(t, waitFor, func() error {
		for _, name := range []string{schemas.StreamCommands, schemas.StreamPackets, schemas.StreamStatus} {
			st, err := cl.JS.Stream(ctx, name)
			if err != nil {
				return err
			}
			if info := st.CachedInfo(); info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
				return fmt.Errorf("stream %s: %d replicas configured, cluster %+v", name, info.Config.Replicas, info.Cluster)
			}
		}
		return nil
	})
	// Killed as soon as the streams exist, the leader sometimes takes the
	// term's next request (a sink consumer) with it, unanswered: the term
	// start retries it after termRequestTimeout rather than after the
	// whole startupTimeout.
	leader, err := cl.StreamLeader(ctx, schemas.StreamCommands, waitFor)
	if err != nil {
		t.Fatal(err)
	}
	cl.Stop(leader)
	h.createCapture("cap", "")
	h.expect("cap", map[string][]string{"node-1": {"p"}})
	start := time.Now()
	if err := cl.Start(leader); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s back in %s", cl.Name(leader), time.Since(start).Round(time.Millisecond))
	h.rec.check(t)
}

// TestConfigReplicas: each stream's replicas are checked, 1 to 5.
func TestConfigReplicas(t *testing.T) {
	c := DefaultConfig()
	if c.CommandsStream.Replicas != 1 || c.StatusStream.Replicas != 1 || c.PacketsStream.Replicas != 1 {
		t.Errorf("default replicas %d, %d, %d, want 1", c.CommandsStream.Replicas, c.StatusStream.Replicas, c.PacketsStream.Replicas)
	}
	for name, mod := range map[string]func(*Config){
		"commandsStream": func(c *Config) { c.CommandsStream.Replicas = 0 },
		"statusStream":   func(c *Config) { c.StatusStream.Replicas = 6 },
		"packetsStream":  func(c *Config) { c.PacketsStream.Replicas = -1 },
	} {
		c := DefaultConfig()
		mod(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: bad replicas accepted", name)
		}
	}
	c.CommandsStream.Replicas, c.StatusStream.Replicas, c.PacketsStream.Replicas = 3, 5, 3
	if err := c.Validate(); err != nil {
		t.Errorf("replicas 3, 5, 3: %v", err)
	}
}
