package k8s

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus"
	appsv1 "k8s.io/api/apps/v1"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/capstream/capstream/internal/clients"
	"github.com/capstream/capstream/internal/config"
	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/natsauth"
	"github.com/capstream/capstream/schemas"
)

// authServer is a nats-server started from a configuration that includes
// auth.conf, with TLS and JetStream, and the passwords in its environment.
type authServer struct {
	url       string
	ca        string
	passwords map[string]string
	// issuerSeed is the callout's account seed, whose public key the
	// server has in $CAPSTREAM_NATSAUTH_ISSUER.
	issuerSeed string
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

	issuer, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := issuer.Seed()
	pub, _ := issuer.PublicKey()
	a.issuerSeed = string(seed)
	t.Setenv(issuerVar, pub)

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

func (a *authServer) connect(t *testing.T, c clients.NATSConfig) (*nats.Conn, *testenv.Violations, error) {
	t.Helper()
	v := &testenv.Violations{}
	opts, err := c.Options(nats.ErrorHandler(v.Handler), nats.RetryOnFailedConnect(false), nats.Timeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(c.URL, opts...)
	if err == nil {
		t.Cleanup(nc.Close)
	}
	return nc, v, err
}

func (a *authServer) login(t *testing.T, user string) (*nats.Conn, *testenv.Violations, jetstream.JetStream) {
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

// TestNATSAuthConfServer starts a real nats-server with auth.conf and TLS,
// and the callout as 25-nats-auth.yaml configures it against the real
// kube-apiserver, and checks the deployment's identities against it:
// anonymous clients and wrong passwords are refused; the router publishes
// commands; a producer pod's token gets its node's identity, which reads
// that node's commands and publishes its batches but cannot touch another
// node's, publish a command or read batches; a sink cannot publish
// commands.
func TestNATSAuthConfServer(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts nats-server")
	}
	a := startAuthServer(t)
	// Every connection that is no static user's waits for the callout's
	// answer, the anonymous one included.
	startCallout(t, a)

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
	if _, err := router.CreateOrUpdateConsumer(ctx, schemas.StreamPackets, schemas.SinkPartitionConsumer(schemas.PcapSinkConsumer(), 0)); err != nil {
		t.Fatalf("router creates the pcap sink's durable: %v", err)
	}
	// Nodes of the shared API server: random names.
	nodeA, nodeB := "k8s-test-"+testRand(t), "k8s-test-"+testRand(t)+".example.com"
	cmdA, _ := schemas.CommandSubject(nodeA, "team-a", "cap")
	cmdB, _ := schemas.CommandSubject(nodeB, "team-b", "cap")
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

	// A producer: its pod's projected token, checked by the callout of
	// 25-nats-auth.yaml, gets its own node's identity only.
	kube := testenv.Kube(t)
	tokenA := producerToken(t, kube, nodeA)
	producerToken(t, kube, nodeB) // B exists, with a producer of its own
	pnc, pv, prod := a.producer(t, nodeA, tokenA)
	cc, err := schemas.ProducerConsumer(nodeA)
	if err != nil {
		t.Fatal(err)
	}
	oc, err := prod.OrderedConsumer(ctx, schemas.StreamCommands, cc)
	if err != nil {
		t.Fatalf("producer reads its node's commands: %v", err)
	}
	if m, err := oc.Next(jetstream.FetchMaxWait(2 * time.Second)); err != nil || m.Subject() != cmdA {
		t.Fatalf("%s's command: %v, %v", nodeA, m, err)
	}
	batch, _ := schemas.PacketSubject("team-a", "cap", nodeA)
	if _, err := prod.Publish(ctx, batch, []byte("batch")); err != nil {
		t.Errorf("producer publishes a batch for its node: %v", err)
	}
	before := commands()
	batchB, _ := schemas.PacketSubject("team-b", "cap", nodeB)
	tokB, _ := schemas.Token(nodeB)
	testenv.RequirePublishDenied(t, pnc, pv, batchB, "$JS.API.CONSUMER.CREATE."+schemas.StreamCommands+".probe.capstream.cmd."+tokB+".>", cmdA)
	testenv.RequireSubscribeDenied(t, pnc, pv, schemas.PacketSubjectsAll)
	// A client with no token, or the shared password of the previous
	// release, is refused.
	noToken := a.config(schemas.UserRouter)
	noToken.User, noToken.Password, noToken.InboxPrefix = "capstream-producer", "shared", ""
	if _, _, err := a.connect(t, noToken); !errors.Is(err, nats.ErrAuthorization) {
		t.Errorf("producer with a password: %v, want an authorization violation", err)
	}

	// Both sinks: no command either. The pcap sink binds its durable.
	for _, user := range []string{schemas.UserPcapSink, schemas.UserFlowSink} {
		snc, sv, sjs := a.login(t, user)
		if user == schemas.UserPcapSink {
			if _, err := sjs.Consumer(ctx, schemas.StreamPackets, schemas.SinkPartitionName(schemas.ConsumerPcapSink, 0)); err != nil {
				t.Errorf("pcap sink binds its durable: %v", err)
			}
		}
		testenv.RequirePublishDenied(t, snc, sv, cmdB)
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

func testRand(t *testing.T) string {
	t.Helper()
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

// startCallout runs `capstream nats-auth` as the manifests configure it
// (its ConfigMap and the pod's environment), pointed at this server and
// the dev kube-apiserver, until the test ends.
func startCallout(t *testing.T, a *authServer) {
	t.Helper()
	kube := testenv.Kube(t)
	objs := loadManifests(t)
	c := componentNamed(t, "nats-auth")
	w := workloadOf(t, objs, c)
	path := configPath(t, objs, c, w, t.TempDir(), podTLSDir(t))
	env := append(podEnv(t, w.pod.Spec.Containers[0]),
		"CAPSTREAM_NATSAUTH_CALLOUT_ISSUERSEED="+a.issuerSeed,
		"CAPSTREAM_NATSAUTH_NATS_PASSWORD="+a.passwords[natsauth.User],
		"CAPSTREAM_NATSAUTH_NATS_URL="+strings.Replace(a.url, "nats://", "tls://", 1),
		"CAPSTREAM_NATSAUTH_NATS_TLS_CAFILE="+a.ca,
		"CAPSTREAM_NATSAUTH_KUBE_KUBECONFIG="+kube.Kubeconfig)
	s := natsauth.DefaultSettings()
	if err := config.Load(path, natsauth.EnvPrefix, env, s); err != nil {
		t.Fatal(err)
	}
	nc, err := s.NATS.Connect()
	if err != nil {
		t.Fatalf("callout connects: %v", err)
	}
	t.Cleanup(nc.Close)
	kc, err := s.Kube.Client("capstream-nats-auth-test")
	if err != nil {
		t.Fatal(err)
	}
	callout, err := natsauth.New(s.Callout, natsauth.Deps{Logger: testenv.Logger(t), Registerer: prometheus.NewRegistry(), NATS: nc, Kube: kc})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Start(t, "nats-auth", callout.Run)
	testenv.Eventually(t, 5*time.Second, callout.Ready)
}

// producerToken creates a Node and, in capstream-system, a producer pod
// of the capstream-producer service account bound to it, and returns the
// token the projected volume of 30-producer.yaml would hold. Both go when
// the test ends.
func producerToken(t *testing.T, kube *testenv.KubeEnv, node string) string {
	t.Helper()
	ctx := t.Context()
	kube.EnsureNamespace(t, namespace)
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "capstream-producer", Namespace: namespace}}
	if _, err := kube.Client.CoreV1().ServiceAccounts(namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	if _, err := kube.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kube.Client.CoreV1().Nodes().Delete(context.Background(), node, metav1.DeleteOptions{}) })
	objs := loadManifests(t)
	ds := find[*appsv1.DaemonSet](t, objs, "capstream-producer")
	var proj *corev1.ServiceAccountTokenProjection
	for _, v := range ds.Spec.Template.Spec.Volumes {
		if v.Projected != nil {
			for _, src := range v.Projected.Sources {
				if src.ServiceAccountToken != nil {
					proj = src.ServiceAccountToken
				}
			}
		}
	}
	if proj == nil {
		t.Fatal("30-producer.yaml: no projected service-account token")
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "capstream-producer-", Namespace: namespace},
		Spec: corev1.PodSpec{ServiceAccountName: ds.Spec.Template.Spec.ServiceAccountName, NodeName: node,
			Containers: []corev1.Container{{Name: "producer", Image: image}}}}
	pod, err := kube.Client.CoreV1().Pods(namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		zero := int64(0)
		_ = kube.Client.CoreV1().Pods(namespace).Delete(context.Background(), pod.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	})
	tr, err := kube.Client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, pod.Spec.ServiceAccountName, &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{
		Audiences: []string{proj.Audience}, ExpirationSeconds: proj.ExpirationSeconds,
		BoundObjectRef: &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token request: %v", err)
	}
	return tr.Status.Token
}

// producer connects as node's producer would: the token from a file, the
// node identity's inbox prefix.
func (a *authServer) producer(t *testing.T, node, token string) (*nats.Conn, *testenv.Violations, jetstream.JetStream) {
	t.Helper()
	id, err := schemas.ProducerIdentity(node)
	if err != nil {
		t.Fatal(err)
	}
	c := clients.NATSConfig{URL: strings.Replace(a.url, "nats://", "tls://", 1), Name: "capstream-producer",
		TokenFile: testenv.File(t, "token", token), InboxPrefix: id.InboxPrefix, TLS: clients.TLSConfig{CAFile: a.ca}}
	nc, v, err := a.connect(t, c)
	if err != nil {
		t.Fatalf("producer of %s connects: %v", node, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, v, js
}
