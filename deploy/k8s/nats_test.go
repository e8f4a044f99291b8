package k8s

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/capstream/capstream/internal/clients"
	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/schemas"
)

var update = flag.Bool("update", false, "rewrite nats/auth.conf from schemas")

// authConfPath is the nats-server authorization block for the identities
// of this deployment.
const authConfPath = "nats/auth.conf"

// natsUser is one user of auth.conf: an identity, and the variable of the
// server's environment that holds its password. The variable has the name
// of the component's own override, so one name means one password on both
// sides.
type natsUser struct {
	id          schemas.Identity
	passwordVar string
}

func natsUsers() []natsUser {
	return []natsUser{
		{schemas.RouterIdentity(), "CAPSTREAM_ROUTER_NATS_PASSWORD"},
		{schemas.ClusterProducerIdentity(), "CAPSTREAM_PRODUCER_NATS_PASSWORD"},
		{schemas.PcapSinkIdentity(), "CAPSTREAM_SINK_PCAP_NATS_PASSWORD"},
		{schemas.FlowSinkIdentity(), "CAPSTREAM_SINK_FLOWS_NATS_PASSWORD"},
		{schemas.MonitorIdentity(), "CAPSTREAM_MONITOR_NATS_PASSWORD"},
	}
}

// authConf renders the authorization block: static users with allow-lists
// only (the server denies everything else), passwords as $VARIABLE
// references that nats-server resolves from its environment at start.
func authConf() []byte {
	var b bytes.Buffer
	b.WriteString(`# nats-server authorization for capstream's identities (DESIGN.md
# "Identities on the bus"). GENERATED from schemas by deploy/k8s/nats_test.go;
# do not edit, run: go test ./deploy/k8s/ -run TestNATSAuthConf -update
#
# Include it from the server's configuration (include ./auth.conf) and give
# the server process one environment variable per user, holding that user's
# password: the same value as the nats-password key of the component's
# Secret (CAPSTREAM_MONITOR_NATS_PASSWORD is yours, for the nats CLI). No
# password is in this file. nats-server stops at start if a variable is
# unset. It reads a variable's value as a configuration value, so a
# password must not be only digits or a word like true: use
# openssl rand -hex 24 (deploy/k8s/README.md).
#
# Every user is in the global account, where JetStream must be enabled; no
# user may publish or subscribe beyond its lists, and a client without
# credentials is refused.
authorization {
  users = [
`)
	quoted := func(list []string) string {
		q := make([]string, len(list))
		for i, s := range list {
			q[i] = fmt.Sprintf("%q", s)
		}
		return "[\n          " + strings.Join(q, ",\n          ") + "\n        ]"
	}
	for _, u := range natsUsers() {
		fmt.Fprintf(&b, "    {\n      user: %q\n      password: $%s\n      permissions: {\n", u.id.User, u.passwordVar)
		fmt.Fprintf(&b, "        publish: { allow: %s }\n", quoted(u.id.Publish))
		fmt.Fprintf(&b, "        subscribe: { allow: %s }\n", quoted(u.id.Subscribe))
		b.WriteString("      }\n    }\n")
	}
	b.WriteString("  ]\n}\n")
	return b.Bytes()
}

// TestNATSAuthConf keeps nats/auth.conf equal to what schemas says, and
// each component's NATS password variable the one auth.conf expects.
func TestNATSAuthConf(t *testing.T) {
	want := authConf()
	if *update {
		if err := os.WriteFile(authConfPath, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(authConfPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from schemas' identities: go test ./deploy/k8s/ -run TestNATSAuthConf -update", authConfPath)
	}
	byUser := map[string]string{}
	for _, u := range natsUsers() {
		byUser[u.id.User] = u.passwordVar
	}
	for _, c := range components {
		v := c.envPrefix + "_NATS_PASSWORD"
		if byUser[c.identity.User] != v || c.secretKeys[v] != "nats-password" {
			t.Errorf("%s: auth.conf reads the password of %s from $%s; the pod sets %s from nats-password (%v)", c.name, c.identity.User, byUser[c.identity.User], v, c.secretKeys)
		}
	}
}

// authServer is a nats-server started from a configuration that includes
// auth.conf, with TLS and JetStream, and the passwords in its environment.
type authServer struct {
	url       string
	ca        string
	passwords map[string]string
}

func startAuthServer(t *testing.T) *authServer {
	t.Helper()
	files := testenv.TLS(t)
	dir := t.TempDir()
	auth, err := os.ReadFile(authConfPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "auth.conf"), auth, 0o600); err != nil {
		t.Fatal(err)
	}
	main := fmt.Sprintf(`listen: "127.0.0.1:-1"
jetstream { store_dir: %q }
tls { cert_file: %q, key_file: %q }
include ./auth.conf
`, filepath.Join(dir, "js"), files.ServerCert, files.ServerKey)
	conf := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(conf, []byte(main), 0o600); err != nil {
		t.Fatal(err)
	}
	a := &authServer{ca: files.CA, passwords: map[string]string{}}
	for _, u := range natsUsers() {
		// The README's recipe: 24 random bytes in hex.
		var b [24]byte
		if _, err := rand.Read(b[:]); err != nil {
			t.Fatal(err)
		}
		p := hex.EncodeToString(b[:])
		t.Setenv(u.passwordVar, p)
		a.passwords[u.id.User] = p
	}

	// A password variable the server's environment lacks stops it.
	missing := natsUsers()[0].passwordVar
	os.Unsetenv(missing)
	if _, err := server.ProcessConfigFile(conf); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("config with $%s unset: %v, want an error naming it", missing, err)
	}
	t.Setenv(missing, a.passwords[natsUsers()[0].id.User])

	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	opts.NoLog, opts.NoSigs = true, true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	if !srv.ReadyForConnections(5 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	a.url = srv.ClientURL()
	return a
}

// violations collects the permission errors the server sends a connection.
type violations struct {
	mu   sync.Mutex
	errs []string
}

func (v *violations) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.errs = append(v.errs, err.Error())
}

func (v *violations) has(s string) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, e := range v.errs {
		if strings.Contains(e, s) {
			return nil
		}
	}
	return errors.New("no error containing " + s + " in " + strings.Join(v.errs, "; "))
}

// config is the NATS section a component of deploy/k8s has, pointed at
// this server: TLS verified with the CA, the identity's user, password
// and inbox prefix.
func (a *authServer) config(user string) clients.NATSConfig {
	var id schemas.Identity
	for _, u := range natsUsers() {
		if u.id.User == user {
			id = u.id
		}
	}
	return clients.NATSConfig{
		URL: strings.Replace(a.url, "nats://", "tls://", 1), Name: user,
		User: user, Password: a.passwords[user], InboxPrefix: id.InboxPrefix,
		TLS: clients.TLSConfig{CAFile: a.ca},
	}
}

func (a *authServer) connect(t *testing.T, c clients.NATSConfig) (*nats.Conn, *violations, error) {
	t.Helper()
	v := &violations{}
	opts, err := c.Options(nats.ErrorHandler(v.handler), nats.RetryOnFailedConnect(false), nats.Timeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(c.URL, opts...)
	if err == nil {
		t.Cleanup(nc.Close)
	}
	return nc, v, err
}

func (a *authServer) login(t *testing.T, user string) (*nats.Conn, *violations, jetstream.JetStream) {
	t.Helper()
	nc, v, err := a.connect(t, a.config(user))
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, v, js
}

// denied publishes on a core connection and waits for the server's
// permission error for subject.
func denied(t *testing.T, nc *nats.Conn, v *violations, subject string) {
	t.Helper()
	if err := nc.Publish(subject, []byte(`{"forged":true}`)); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		return v.has(`Permissions Violation for Publish to "` + subject + `"`)
	})
}

// TestNATSAuthConfServer starts a real nats-server with auth.conf and TLS
// and checks the deployment's identities against it: anonymous clients
// and wrong passwords are refused; the router publishes commands; the
// shared producer identity reads any node's commands but cannot publish a
// command or read batches; a sink cannot publish commands.
func TestNATSAuthConfServer(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts nats-server")
	}
	a := startAuthServer(t)

	anon := a.config(schemas.UserRouter)
	anon.User, anon.Password = "", ""
	if _, _, err := a.connect(t, anon); err == nil || !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(err.Error(), "Authorization Violation") {
		t.Errorf("anonymous client: %v, want an authorization violation", err)
	}
	wrong := a.config(schemas.UserRouter)
	wrong.Password = "guess"
	if _, _, err := a.connect(t, wrong); err == nil {
		t.Error("wrong password connected")
	}
	plain := a.config(schemas.UserRouter)
	plain.URL, plain.TLS = a.url, clients.TLSConfig{}
	if _, _, err := a.connect(t, plain); err == nil {
		t.Error("plaintext client connected to the TLS-only server")
	}

	// The router sets up the commands stream and publishes a command for
	// each of two nodes.
	_, _, router := a.login(t, schemas.UserRouter)
	ctx := t.Context()
	for _, cfg := range []jetstream.StreamConfig{schemas.CommandsStream(), schemas.PacketsStream(schemas.DefaultPacketsStreamLimits())} {
		if _, err := router.CreateStream(ctx, cfg); err != nil {
			t.Fatalf("router creates %s: %v", cfg.Name, err)
		}
	}
	if _, err := router.CreateOrUpdateConsumer(ctx, schemas.StreamPackets, schemas.PcapSinkConsumer()); err != nil {
		t.Fatalf("router creates the pcap sink's durable: %v", err)
	}
	cmdA, _ := schemas.CommandSubject("node-a", "team-a", "cap")
	cmdB, _ := schemas.CommandSubject("node-b.example.com", "team-b", "cap")
	for _, s := range []string{cmdA, cmdB} {
		if _, err := router.Publish(ctx, s, []byte(`{}`)); err != nil {
			t.Fatalf("router publishes command %s: %v", s, err)
		}
	}
	commands := func() uint64 {
		t.Helper()
		s, err := router.Stream(ctx, schemas.StreamCommands)
		if err != nil {
			t.Fatal(err)
		}
		return s.CachedInfo().State.Msgs
	}

	// The producer identity: every node's commands, as a producer reads
	// them (the gap of the shared identity), and its batches go in.
	pnc, pv, prod := a.login(t, schemas.UserClusterProducer)
	for node, want := range map[string]string{"node-a": cmdA, "node-b.example.com": cmdB} {
		cc, err := schemas.ProducerConsumer(node)
		if err != nil {
			t.Fatal(err)
		}
		oc, err := prod.OrderedConsumer(ctx, schemas.StreamCommands, cc)
		if err != nil {
			t.Fatalf("producer reads %s's commands: %v", node, err)
		}
		m, err := oc.Next(jetstream.FetchMaxWait(2 * time.Second))
		if err != nil || m.Subject() != want {
			t.Fatalf("%s's command: %v, %v", node, m, err)
		}
	}
	batch, _ := schemas.PacketSubject("team-b", "cap", "node-b.example.com")
	if _, err := prod.Publish(ctx, batch, []byte("batch")); err != nil {
		t.Errorf("producer publishes a batch: %v", err)
	}
	before := commands()
	denied(t, pnc, pv, cmdA)
	if _, err := pnc.SubscribeSync(schemas.PacketSubjectsAll); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		return pv.has(`Permissions Violation for Subscription to "` + schemas.PacketSubjectsAll + `"`)
	})

	// Both sinks: no command either. The pcap sink binds its durable.
	for _, user := range []string{schemas.UserPcapSink, schemas.UserFlowSink} {
		snc, sv, sjs := a.login(t, user)
		if user == schemas.UserPcapSink {
			if _, err := sjs.Consumer(ctx, schemas.StreamPackets, schemas.ConsumerPcapSink); err != nil {
				t.Errorf("pcap sink binds its durable: %v", err)
			}
		}
		denied(t, snc, sv, cmdB)
	}
	if after := commands(); after != before {
		t.Errorf("commands stream went from %d to %d messages", before, after)
	}

	// The monitor reads stream state.
	_, _, mon := a.login(t, schemas.UserMonitor)
	if _, err := mon.Stream(ctx, schemas.StreamPackets); err != nil {
		t.Errorf("monitor reads the packets stream's state: %v", err)
	}
}
