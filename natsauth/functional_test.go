package natsauth_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/capstream/capstream/internal/clients"
	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/natsauth"
	"github.com/capstream/capstream/schemas"
)

// The tests run the callout between a real nats-server (TLS, JetStream,
// auth_callout with the callout's own user and the router as auth_users)
// and the real kube-apiserver of deploy/dev/deps.sh, which issues the
// pod-bound tokens (TokenRequest, as the kubelet does for a projected
// volume) and reviews them.

const producerSA = "capstream-producer"

// env is one server, one callout and a namespace with the producers'
// service account.
type env struct {
	kube    *testenv.KubeEnv
	ns      string
	url, ca string
	srv     *server.Server
	reg     *prometheus.Registry
	router  jetstream.JetStream
	// now shifts the callout's clock (tests of expiry).
	mu  sync.Mutex
	now time.Time
}

type envOptions struct {
	encrypted bool
	maxTTL    time.Duration
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func startEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	e := &env{kube: testenv.Kube(t)}
	e.ns = e.kube.Namespace(t, nil)
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: producerSA, Namespace: e.ns}}
	if _, err := e.kube.Client.CoreV1().ServiceAccounts(e.ns).Create(t.Context(), sa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	issuer, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	issuerSeed, _ := issuer.Seed()
	issuerPub, _ := issuer.PublicKey()
	cfg := natsauth.DefaultConfig()
	cfg.IssuerSeed = string(issuerSeed)
	cfg.ServiceAccounts = []string{"system:serviceaccount:" + e.ns + ":" + producerSA}
	if o.maxTTL > 0 {
		cfg.MaxTTL = o.maxTTL
	}
	callout := &server.AuthCallout{Issuer: issuerPub, AuthUsers: []string{natsauth.User, schemas.UserRouter}}
	if o.encrypted {
		xk, err := nkeys.CreateCurveKeys()
		if err != nil {
			t.Fatal(err)
		}
		seed, _ := xk.Seed()
		callout.XKey, _ = xk.PublicKey()
		cfg.XKeySeed = string(seed)
	}

	files := testenv.TLS(t)
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: files.ServerCert, KeyFile: files.ServerKey})
	if err != nil {
		t.Fatal(err)
	}
	calloutPW, routerPW := randomHex(t, 12), randomHex(t, 12)
	router := schemas.RouterIdentity()
	opts := &server.Options{
		Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		JetStream: true, StoreDir: t.TempDir(),
		TLS: true, TLSConfig: tc, TLSTimeout: 2, AuthTimeout: 3,
		Users: []*server.User{
			{Username: natsauth.User, Password: calloutPW, Permissions: &server.Permissions{
				Publish:   &server.SubjectPermission{Allow: []string{}},
				Subscribe: &server.SubjectPermission{Allow: natsauth.SubscribeAllow()},
				Response:  &server.ResponsePermission{MaxMsgs: 1, Expires: natsauth.ResponseTTL},
			}},
			{Username: router.User, Password: routerPW, Permissions: &server.Permissions{
				Publish:   &server.SubjectPermission{Allow: router.Publish},
				Subscribe: &server.SubjectPermission{Allow: router.Subscribe},
			}},
		},
		AuthCallout: callout,
	}
	e.srv, err = server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	e.srv.Start()
	t.Cleanup(func() { e.srv.Shutdown(); e.srv.WaitForShutdown() })
	if !e.srv.ReadyForConnections(5 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	e.url, e.ca = strings.Replace(e.srv.ClientURL(), "nats://", "tls://", 1), files.CA

	nc, err := e.base(natsauth.User).withUser(natsauth.User, calloutPW).Connect()
	if err != nil {
		t.Fatalf("callout connects: %v", err)
	}
	t.Cleanup(nc.Close)
	e.reg = prometheus.NewRegistry()
	kube, err := natsauth.KubeConfig{Kubeconfig: e.kube.Kubeconfig, QPS: 50, Burst: 100}.Client("capstream-nats-auth-test")
	if err != nil {
		t.Fatal(err)
	}
	c, err := natsauth.New(cfg, natsauth.Deps{Logger: testenv.Logger(t), Registerer: e.reg, NATS: nc, Kube: kube, Now: e.clock})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Start(t, "nats-auth", c.Run)
	testenv.Eventually(t, 5*time.Second, c.Ready)

	rc := e.base(router.User).withUser(router.User, routerPW)
	rc.InboxPrefix = router.InboxPrefix
	rnc, err := rc.Connect()
	if err != nil {
		t.Fatalf("router connects: %v", err)
	}
	t.Cleanup(rnc.Close)
	if e.router, err = jetstream.New(rnc); err != nil {
		t.Fatal(err)
	}
	for _, sc := range []jetstream.StreamConfig{schemas.CommandsStream(), schemas.PacketsStream(schemas.DefaultPacketsStreamLimits())} {
		if _, err := e.router.CreateStream(t.Context(), sc); err != nil {
			t.Fatalf("create %s: %v", sc.Name, err)
		}
	}
	// A sink's durable, so the interest-retention stream keeps batches.
	if _, err := e.router.CreateOrUpdateConsumer(t.Context(), schemas.StreamPackets, schemas.PcapSinkConsumer()); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) clock() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.now.IsZero() {
		return time.Now()
	}
	return e.now
}

type natsConfig struct{ clients.NATSConfig }

// base is a client of the server: TLS verified with the test CA, no
// credentials.
func (e *env) base(name string) natsConfig {
	return natsConfig{clients.NATSConfig{URL: e.url, Name: name, TLS: clients.TLSConfig{CAFile: e.ca}}}
}

func (c natsConfig) withUser(user, pw string) natsConfig {
	c.User, c.Password = user, pw
	return c
}

// Connect connects once, failing at once when refused.
func (c natsConfig) Connect(extra ...nats.Option) (*nats.Conn, error) {
	opts, err := c.Options(append([]nats.Option{nats.RetryOnFailedConnect(false), nats.Timeout(5 * time.Second)}, extra...)...)
	if err != nil {
		return nil, err
	}
	return nats.Connect(c.URL, opts...)
}

// node creates a Node object (no kubelet: nothing runs on it) and deletes
// it when the test ends.
func (e *env) node(t *testing.T) string {
	t.Helper()
	name := "natsauth-" + randomHex(t, 4) + ".example.com"
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := e.kube.Client.CoreV1().Nodes().Create(t.Context(), n, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// t.Context() is done by now.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := e.kube.Client.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Errorf("delete node %s: %v", name, err)
		}
	})
	return name
}

// pod creates a pod of the service account sa on node ("" leaves it
// unscheduled), as the DaemonSet controller would.
func (e *env) pod(t *testing.T, sa, node string) *corev1.Pod {
	t.Helper()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "producer-" + randomHex(t, 4), Namespace: e.ns},
		Spec: corev1.PodSpec{ServiceAccountName: sa, NodeName: node,
			Containers: []corev1.Container{{Name: "producer", Image: "ghcr.io/capstream/capstream:latest"}}},
	}
	created, err := e.kube.Client.CoreV1().Pods(e.ns).Create(t.Context(), p, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return created
}

// token requests a token of sa for audience, bound to pod if not nil: what
// the kubelet writes into a projected service-account token volume.
func (e *env) token(t *testing.T, sa string, pod *corev1.Pod, audience string) string {
	t.Helper()
	exp := int64(600)
	spec := authnv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: &exp}
	if pod != nil {
		spec.BoundObjectRef = &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}
	}
	tr, err := e.kube.Client.CoreV1().ServiceAccounts(e.ns).CreateToken(t.Context(), sa, &authnv1.TokenRequest{Spec: spec}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token request: %v", err)
	}
	return tr.Status.Token
}

// producerToken is a token of a producer pod on node, for NATS.
func (e *env) producerToken(t *testing.T, node string) string {
	t.Helper()
	return e.token(t, producerSA, e.pod(t, producerSA, node), natsauth.DefaultConfig().Audience)
}

// producer is node's producer connection: the token in a file (as the
// projected volume holds it), the node identity's inbox prefix.
func (e *env) producer(t *testing.T, node, tokenFile string, extra ...nats.Option) (*nats.Conn, *testenv.Violations, error) {
	t.Helper()
	id, err := schemas.ProducerIdentity(node)
	if err != nil {
		t.Fatal(err)
	}
	c := e.base("capstream-producer")
	c.TokenFile, c.InboxPrefix = tokenFile, id.InboxPrefix
	v := &testenv.Violations{}
	nc, err := c.Connect(append([]nats.Option{nats.ErrorHandler(v.Handler)}, extra...)...)
	if err == nil {
		t.Cleanup(nc.Close)
	}
	return nc, v, err
}

func writeToken(t *testing.T, path, token string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestProducerIdentity: a producer pod's token on node A gets node A's
// identity: it publishes batches for A and reads A's commands through a
// filtered ordered consumer, and the server refuses a batch for node B,
// B's commands, any command publish and a subscription to every batch.
func TestProducerIdentity(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: nats-server and kube-apiserver")
	}
	for _, encrypted := range []bool{false, true} {
		name := "plain"
		if encrypted {
			name = "xkey"
		}
		t.Run(name, func(t *testing.T) {
			e := startEnv(t, envOptions{encrypted: encrypted})
			ctx := t.Context()
			nodeA, nodeB := e.node(t), e.node(t)
			cmdA, _ := schemas.CommandSubject(nodeA, "team-a", "cap")
			cmdB, _ := schemas.CommandSubject(nodeB, "team-b", "cap")
			for _, s := range []string{cmdA, cmdB} {
				if _, err := e.router.Publish(ctx, s, []byte(`{}`)); err != nil {
					t.Fatal(err)
				}
			}

			file := filepath.Join(t.TempDir(), "token")
			writeToken(t, file, e.producerToken(t, nodeA))
			nc, v, err := e.producer(t, nodeA, file)
			if err != nil {
				t.Fatalf("producer of %s connects: %v", nodeA, err)
			}
			js, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			batchA, _ := schemas.PacketSubject("team-a", "cap", nodeA)
			if _, err := js.Publish(ctx, batchA, []byte("batch")); err != nil {
				t.Errorf("publish a batch for its node: %v", err)
			}
			cc, _ := schemas.ProducerConsumer(nodeA)
			oc, err := js.OrderedConsumer(ctx, schemas.StreamCommands, cc)
			if err != nil {
				t.Fatalf("consumer on its node's commands: %v", err)
			}
			if m, err := oc.Next(jetstream.FetchMaxWait(3 * time.Second)); err != nil || m.Subject() != cmdA {
				t.Fatalf("its node's command: %v, %v", m, err)
			}
			// A consumer on node B's commands: the create request the
			// jetstream client sends, refused by the server.
			tokenB, _ := schemas.Token(nodeB)
			testenv.RequirePublishDenied(t, nc, v, "$JS.API.CONSUMER.CREATE."+schemas.StreamCommands+".probe.capstream.cmd."+tokenB+".>")

			batchB, _ := schemas.PacketSubject("team-b", "cap", nodeB)
			testenv.RequirePublishDenied(t, nc, v, batchB, cmdA)
			testenv.RequireSubscribeDenied(t, nc, v, schemas.PacketSubjectsAll)

			s, err := e.router.Stream(ctx, schemas.StreamPackets)
			if err != nil {
				t.Fatal(err)
			}
			if n := s.CachedInfo().State.Msgs; n != 1 {
				t.Errorf("packets stream holds %d messages, want the one batch for %s", n, nodeA)
			}
			if got := testenv.Metric(t, e.reg, "capstream_natsauth_allowed_total", nil); got != 1 {
				t.Errorf("allowed_total = %v, want 1", got)
			}
		})
	}
}

// TestRefused: every connection that is not a producer pod's on a node is
// refused, each counted under its reason.
func TestRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: nats-server and kube-apiserver")
	}
	e := startEnv(t, envOptions{})
	node := e.node(t)
	aud := natsauth.DefaultConfig().Audience
	other := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "not-a-producer", Namespace: e.ns}}
	if _, err := e.kube.Client.CoreV1().ServiceAccounts(e.ns).Create(t.Context(), other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	deleted := e.pod(t, producerSA, node)
	deletedToken := e.token(t, producerSA, deleted, aud)
	// Removed at once, as once the kubelet has stopped it: a pod being
	// deleted keeps its token valid until it is gone (plus the API
	// server's 60s leeway after its deletion timestamp).
	now := int64(0)
	if err := e.kube.Client.CoreV1().Pods(e.ns).Delete(t.Context(), deleted.Name, metav1.DeleteOptions{GracePeriodSeconds: &now}); err != nil {
		t.Fatal(err)
	}
	header := `eyJhbGciOiJSUzI1NiJ9.` // a JWT header, forged payload and signature
	cases := []struct {
		name, token, reason string
	}{
		{"another service account's pod-bound token", e.token(t, other.Name, e.pod(t, other.Name, node), aud), "service_account"},
		{"token for the API server's audience", e.token(t, producerSA, e.pod(t, producerSA, node), "https://kubernetes.default.svc"), "rejected"},
		{"token of a deleted pod", deletedToken, "rejected"},
		{"token bound to no pod", e.token(t, producerSA, nil, aud), "no_node"},
		{"token of an unscheduled pod", e.token(t, producerSA, e.pod(t, producerSA, ""), aud), "no_node"},
		{"forged JWT", header + "eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6eDp5In0.c2ln", "rejected"},
		{"garbage", "not a token at all", "malformed_token"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := testenv.Metric(t, e.reg, "capstream_natsauth_refused_total", map[string]string{"reason": tc.reason})
			file := filepath.Join(t.TempDir(), "token")
			writeToken(t, file, tc.token)
			if _, _, err := e.producer(t, node, file); !errors.Is(err, nats.ErrAuthorization) {
				t.Fatalf("connect: %v, want %v", err, nats.ErrAuthorization)
			}
			if got := testenv.Metric(t, e.reg, "capstream_natsauth_refused_total", map[string]string{"reason": tc.reason}); got != before+1 {
				t.Errorf("refused_total{reason=%s} went from %v to %v, want +1", tc.reason, before, got)
			}
		})
	}
	t.Run("no credentials or a password", func(t *testing.T) {
		before := testenv.Metric(t, e.reg, "capstream_natsauth_refused_total", map[string]string{"reason": "no_token"})
		for _, c := range []natsConfig{e.base("anonymous"), e.base("password").withUser("capstream-producer", "shared-password")} {
			if _, err := c.Connect(); !errors.Is(err, nats.ErrAuthorization) {
				t.Errorf("%s: %v, want %v", c.Name, err, nats.ErrAuthorization)
			}
		}
		if got := testenv.Metric(t, e.reg, "capstream_natsauth_refused_total", map[string]string{"reason": "no_token"}); got != before+2 {
			t.Errorf("refused_total{reason=no_token} went from %v to %v, want +2", before, got)
		}
	})
	t.Run("token about to expire", func(t *testing.T) {
		// The API server still accepts it; by the callout's clock it
		// has less than the least lifetime left.
		e.mu.Lock()
		e.now = time.Now().Add(600*time.Second - time.Second)
		e.mu.Unlock()
		t.Cleanup(func() { e.mu.Lock(); e.now = time.Time{}; e.mu.Unlock() })
		file := filepath.Join(t.TempDir(), "token")
		writeToken(t, file, e.producerToken(t, node))
		if _, _, err := e.producer(t, node, file); !errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("connect: %v, want %v", err, nats.ErrAuthorization)
		}
		if got := testenv.Metric(t, e.reg, "capstream_natsauth_refused_total", map[string]string{"reason": "expiry"}); got != 1 {
			t.Errorf("refused_total{reason=expiry} = %v, want 1", got)
		}
	})
}

// TestExpiryReconnect: the server closes a producer's connection when its
// identity expires (callout.maxTTL), and the producer reconnects with the
// token its file holds by then, which is reviewed afresh: here a token of
// another pod on another node, so the new connection has that node's
// rights and no longer the first's.
func TestExpiryReconnect(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: nats-server and kube-apiserver")
	}
	e := startEnv(t, envOptions{maxTTL: 3 * time.Second})
	nodeA, nodeB := e.node(t), e.node(t)
	file := filepath.Join(t.TempDir(), "token")
	writeToken(t, file, e.producerToken(t, nodeA))
	reconnected := make(chan struct{}, 4)
	nc, v, err := e.producer(t, nodeA, file, nats.ReconnectWait(100*time.Millisecond), nats.MaxReconnects(-1),
		nats.ReconnectHandler(func(*nats.Conn) {
			select {
			case reconnected <- struct{}{}:
			default:
			}
		}))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	writeToken(t, file, e.producerToken(t, nodeB))
	select {
	case <-reconnected:
	case <-time.After(10 * time.Second):
		t.Fatalf("no reconnect after the identity expired (last error %v)", nc.LastError())
	}
	if got := testenv.Metric(t, e.reg, "capstream_natsauth_allowed_total", nil); got < 2 {
		t.Errorf("allowed_total = %v, want a second grant", got)
	}
	// The connection's inbox prefix is node A's, which node B's identity
	// may not read: core publishes show the rights.
	batchA, _ := schemas.PacketSubject("team", "cap", nodeA)
	testenv.RequirePublishDenied(t, nc, v, batchA)
	batchB, _ := schemas.PacketSubject("team", "cap", nodeB)
	if err := nc.Publish(batchB, []byte("batch")); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		s, err := e.router.Stream(t.Context(), schemas.StreamPackets)
		if err != nil {
			return err
		}
		if n := s.CachedInfo().State.Msgs; n < 1 {
			return errors.New("node B's batch is not in the stream")
		}
		return nil
	})
}
