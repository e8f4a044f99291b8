package k8s

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"

	"github.com/capstream/capstream/access"
	"github.com/capstream/capstream/internal/clients"
	"github.com/capstream/capstream/natsauth"
	"github.com/capstream/capstream/producer"
	"github.com/capstream/capstream/router"
	"github.com/capstream/capstream/sink/flowstore"
	"github.com/capstream/capstream/sink/pcapstore"
)

// checkNATS: the component connects over TLS, verified against the
// mounted CA, as its own identity: with its password from the environment
// (podEnv's dummy value of its Secret's nats-password), or, for the
// producer, with its pod's projected token and its node identity's inbox;
// nothing in its connection logs an insecurity warning.
func checkNATS(t *testing.T, c component, got loaded, ca, tlsDir string) {
	t.Helper()
	n := got.nats
	if !strings.HasPrefix(n.URL, "tls://") || n.Plaintext || n.Anonymous {
		t.Errorf("nats.url %s, plaintext %v, anonymous %v: want tls:// with credentials", n.URL, n.Plaintext, n.Anonymous)
	}
	if n.InboxPrefix != c.identity.InboxPrefix {
		t.Errorf("nats.inboxPrefix %q: want the identity's %q", n.InboxPrefix, c.identity.InboxPrefix)
	}
	if c.name == "producer" {
		token := filepath.Join(filepath.Dir(tlsDir), "nats", "token")
		if n.TokenFile != token || n.User != "" || n.Password != "" || n.CredsFile != "" || n.Token != "" {
			t.Errorf("nats: tokenFile %q, user %q, password set %v, credsFile %q, token set %v: want the projected token %s only",
				n.TokenFile, n.User, n.Password != "", n.CredsFile, n.Token != "", tokenMount+"/token")
		}
	} else {
		if n.User != c.identity.User {
			t.Errorf("nats.user %q: want the identity's %q", n.User, c.identity.User)
		}
		if n.Password != "dummy-nats-password" || n.CredsFile != "" || n.Token != "" || n.TokenFile != "" {
			t.Errorf("nats: password %q, credsFile %q, token set %v, tokenFile %q: want the password from the Secret only", n.Password, n.CredsFile, n.Token != "", n.TokenFile)
		}
	}
	if n.TLS.CAFile != ca || n.TLS.InsecureSkipVerify {
		t.Errorf("nats.tls %+v: want caFile %s, verified", n.TLS, tlsCA)
	}
	checkNoWarnings(t, "nats", n.Warnings())
}

func checkNoWarnings(t *testing.T, section string, warnings []string) {
	t.Helper()
	for _, w := range warnings {
		if w != "" {
			t.Errorf("%s: %s", section, w)
		}
	}
}

func checkComponentSpecifics(t *testing.T, got loaded, ctr corev1.Container, ca string) {
	t.Helper()
	envFrom := map[string]*corev1.EnvVarSource{}
	for _, e := range ctr.Env {
		envFrom[e.Name] = e.ValueFrom
	}
	// fromField checks the variable comes from the downward API's field.
	fromField := func(name, field string) {
		if v := envFrom[name]; v == nil || v.FieldRef == nil || v.FieldRef.FieldPath != field {
			t.Errorf("env %s: want the downward API's %s", name, field)
		}
	}
	// secureClickHouse: the secure native port, verified with the CA, and
	// the user and password of the component's Secret.
	secureClickHouse := func(ch clients.ClickHouseConfig) {
		if !ch.Secure || ch.TLS.CAFile != ca || ch.TLS.InsecureSkipVerify || !strings.HasSuffix(ch.Addr, ":9440") {
			t.Errorf("clickhouse %s, secure %v, tls %+v: want the secure port 9440 verified with %s", ch.Addr, ch.Secure, ch.TLS, tlsCA)
		}
		if ch.Username != "dummy-clickhouse-username" || ch.Password != "dummy-clickhouse-password" {
			t.Error("clickhouse username and password do not come from the Secret")
		}
		checkNoWarnings(t, "clickhouse", ch.Warnings())
	}
	// secureS3: HTTPS verified with the CA, and the keys of the
	// component's Secret.
	secureS3 := func(s3 clients.S3Config) {
		if s3.AccessKey != "dummy-s3-access-key" || s3.SecretKey != "dummy-s3-secret-key" {
			t.Error("S3 keys do not come from the Secret")
		}
		if !s3.Secure || s3.TLS.CAFile != ca || s3.TLS.InsecureSkipVerify {
			t.Errorf("s3 secure %v, tls %+v: want HTTPS verified with %s", s3.Secure, s3.TLS, tlsCA)
		}
		checkNoWarnings(t, "s3", s3.Warnings())
	}
	switch s := got.settings.(type) {
	case *router.Settings:
		if s.Kube.Kubeconfig != "" {
			t.Errorf("kube.kubeconfig %q: in cluster it must be empty", s.Kube.Kubeconfig)
		}
		le := s.Router.LeaderElection
		if !le.Enabled || le.Namespace != namespace {
			t.Errorf("leader election %+v: want enabled in %s", le, namespace)
		}
		fromField("CAPSTREAM_ROUTER_ROUTER_LEADERELECTION_NAMESPACE", "metadata.namespace")
		fromField("CAPSTREAM_ROUTER_ROUTER_LEADERELECTION_IDENTITY", "metadata.name")
		if s.Router.Namespace != "" {
			t.Errorf("router.namespace %q: the deployment watches every namespace", s.Router.Namespace)
		}
	case *producer.Settings:
		fromField("CAPSTREAM_PRODUCER_NODE", "spec.nodeName")
		if s.Producer.Source != producer.SourceAFPacket || s.Producer.AFPacket.NetNS != "" {
			t.Errorf("producer: want live afpacket capture in the host namespace, have source %q netns %q", s.Producer.Source, s.Producer.AFPacket.NetNS)
		}
	case *pcapstore.Settings:
		secureS3(s.S3)
		secureClickHouse(s.ClickHouse)
	case *flowstore.Settings:
		secureClickHouse(s.ClickHouse)
	case *natsauth.Settings:
		if s.Kube.Kubeconfig != "" {
			t.Errorf("kube.kubeconfig %q: in cluster it must be empty", s.Kube.Kubeconfig)
		}
		want := natsauth.DefaultConfig()
		if s.Callout.Audience != tokenAudience || !cmp.Equal(want.ServiceAccounts, s.Callout.ServiceAccounts) || s.Callout.Account != "$G" {
			t.Errorf("callout audience %q, service accounts %v, account %q: want the producers' %s tokens of %v, in $G",
				s.Callout.Audience, s.Callout.ServiceAccounts, s.Callout.Account, tokenAudience, want.ServiceAccounts)
		}
		if s.Callout.MaxTTL > time.Hour {
			t.Errorf("callout.maxTTL %s: above the tokens' hour", s.Callout.MaxTTL)
		}
	case *access.Settings:
		if s.Kube.Kubeconfig != "" {
			t.Errorf("kube.kubeconfig %q: in cluster it must be empty", s.Kube.Kubeconfig)
		}
		a := s.Access
		if a.Plaintext || a.CertFile != accessTLSMount+"/"+corev1.TLSCertKey || a.KeyFile != accessTLSMount+"/"+corev1.TLSPrivateKeyKey {
			t.Errorf("access: plaintext %v, certFile %q, keyFile %q: want HTTPS with the mounted %s/tls.{crt,key}", a.Plaintext, a.CertFile, a.KeyFile, accessTLSMount)
		}
		checkNoWarnings(t, "access", a.Warnings())
		secureS3(s.S3)
		secureClickHouse(s.ClickHouse)
	default:
		t.Fatalf("unexpected settings %T", s)
	}
}
