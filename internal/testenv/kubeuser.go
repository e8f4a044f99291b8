package testenv

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/capstream/capstream/internal/clients"
)

// Environment variables deps.sh writes for the access API's tests.
const (
	// EnvKubeUser and EnvKubeUserToken are an ordinary token-file user of
	// the kube-apiserver, with no rights until a test grants some.
	EnvKubeUser      = "CAPSTREAM_TEST_KUBE_USER"
	EnvKubeUserToken = "CAPSTREAM_TEST_KUBE_USER_TOKEN"
	// EnvClickHouseReaderUser and EnvClickHouseReaderPassword are a
	// read-only ClickHouse user (profile readonly=1).
	EnvClickHouseReaderUser     = "CAPSTREAM_TEST_CLICKHOUSE_READER_USER"
	EnvClickHouseReaderPassword = "CAPSTREAM_TEST_CLICKHOUSE_READER_PASSWORD"
)

// KubeUser is a user of the real kube-apiserver and its bearer token.
type KubeUser struct {
	Name, Token string
	// TokenFile tells whether it is deps.sh's token-file user (true) or a
	// service account made for this test, with services started by an
	// older deps.sh.
	TokenFile bool
}

// User returns deps.sh's token-file user (EnvKubeUser). Services started
// by an older deps.sh have none; the test then gets a service account of
// its own, in a namespace of its own, with a token from the TokenRequest
// API: a user the API server authenticates just the same.
func (k *KubeEnv) User(t testing.TB) KubeUser {
	t.Helper()
	if name, token := Getenv(EnvKubeUser), Getenv(EnvKubeUserToken); name != "" && token != "" {
		return KubeUser{Name: name, Token: token, TokenFile: true}
	}
	ns := k.Namespace(t, nil)
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "capstream-test-user", Namespace: ns}}
	if _, err := k.Client.CoreV1().ServiceAccounts(ns).Create(t.Context(), sa, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create service account: %v", err)
	}
	expiry := int64(time.Hour / time.Second)
	tr, err := k.Client.CoreV1().ServiceAccounts(ns).CreateToken(t.Context(), sa.Name,
		&authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{ExpirationSeconds: &expiry}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create token: %v", err)
	}
	t.Logf("%s is not set (services from an older deps.sh): acting as service account %s/%s", EnvKubeUserToken, ns, sa.Name)
	return KubeUser{Name: "system:serviceaccount:" + ns + ":" + sa.Name, Token: tr.Status.Token}
}

// GrantCaptureFiles gives user the verbs on packetcaptures/files of
// projectcalico.org in ns, as a namespace admin grants a developer: a
// Role and a RoleBinding, deleted with the namespace.
func (k *KubeEnv) GrantCaptureFiles(t testing.TB, ns, user string, verbs ...string) {
	t.Helper()
	name := "capture-files-" + randomHex(3)
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"projectcalico.org"}, Resources: []string{"packetcaptures/files"}, Verbs: verbs}}}
	if _, err := k.Client.RbacV1().Roles(ns).Create(t.Context(), role, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create role: %v", err)
	}
	rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
		Subjects: []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}}}
	if _, err := k.Client.RbacV1().RoleBindings(ns).Create(t.Context(), rb, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create rolebinding: %v", err)
	}
	// The API server's RBAC authorizer learns of the binding through a
	// watch: wait until it answers with it, so the test sees the grant.
	for _, verb := range verbs {
		Eventually(t, 30*time.Second, func() error {
			sar := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{User: user,
				ResourceAttributes: &authzv1.ResourceAttributes{Namespace: ns, Verb: verb, Group: "projectcalico.org", Resource: "packetcaptures", Subresource: "files"}}}
			got, err := k.Client.AuthorizationV1().SubjectAccessReviews().Create(t.Context(), sar, metav1.CreateOptions{})
			if err != nil {
				return err
			}
			if !got.Status.Allowed {
				return fmt.Errorf("%s may not %s packetcaptures/files in %s yet", user, verb, ns)
			}
			return nil
		})
	}
}

// ClickHouseReaderConfig is how the access API reaches database on the
// test server: as deps.sh's read-only user, or, with services started by
// an older deps.sh, as the default user (the API's queries still set
// readonly=1 themselves). The second result says which.
func ClickHouseReaderConfig(database string) (clients.ClickHouseConfig, bool) {
	c := ClickHouseConfig(database)
	if user, pw := Getenv(EnvClickHouseReaderUser), Getenv(EnvClickHouseReaderPassword); user != "" && pw != "" {
		c.Username, c.Password = user, pw
		return c, true
	}
	return c, false
}

// PcapObject describes an object PutPcap stores as the pcap sink would.
type PcapObject struct {
	Key            string
	Node, Pod, Ifc string
	Records        []PcapRecord
}

// PutPcap stores a pcap object of the records with the user metadata the
// pcap sink writes (node, pod, interface, first and last packet time,
// SHA-256) and returns its bytes.
func (b *S3Bucket) PutPcap(t testing.TB, o PcapObject) []byte {
	t.Helper()
	file := PcapBytes(t, o.Records...)
	sum := sha256.Sum256(file)
	meta := map[string]string{"Capstream-Node": o.Node, "Capstream-Pod": o.Pod, "Capstream-Interface": o.Ifc,
		"Capstream-Sha256": hex.EncodeToString(sum[:])}
	if n := len(o.Records); n > 0 {
		meta["Capstream-First-Time"] = o.Records[0].Info.Timestamp.UTC().Format(time.RFC3339Nano)
		meta["Capstream-Last-Time"] = o.Records[n-1].Info.Timestamp.UTC().Format(time.RFC3339Nano)
	}
	if _, err := b.Client.PutObject(t.Context(), b.Bucket, o.Key, bytes.NewReader(file), int64(len(file)),
		minio.PutObjectOptions{UserMetadata: meta}); err != nil {
		t.Fatalf("put %s: %v", o.Key, err)
	}
	return file
}

// ReadPcapBytes reads every record of a pcap held in memory; the test
// fails on any error.
func ReadPcapBytes(t testing.TB, b []byte) []PcapRecord {
	t.Helper()
	path := filepath.Join(t.TempDir(), "read.pcap")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	recs, err := ReadPcap(path)
	if err != nil {
		t.Fatalf("read pcap: %v", err)
	}
	return recs
}
