package clients_test

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/capstream/capstream/internal/clients"
	"github.com/capstream/capstream/internal/testenv"
)

// tlsNATS starts an embedded nats-server that speaks TLS only, with the
// server certificate of files, and requires a client certificate signed by
// the CA when verify is set.
func tlsNATS(t *testing.T, files testenv.TLSFiles, verify bool) string {
	t.Helper()
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: files.ServerCert, KeyFile: files.ServerKey, CaFile: files.CA, Verify: verify})
	if err != nil {
		t.Fatal(err)
	}
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
		TLS: true, TLSVerify: verify, TLSConfig: tc, TLSTimeout: 2})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(s.Shutdown)
	return strings.Replace(s.ClientURL(), "nats://", "tls://", 1)
}

// TestNATSTLS checks the NATS client against a real server that requires
// TLS and client certificates: with the right CA and a client certificate
// JetStream works; a wrong CA fails at once with an error that names the
// setting and the CA file; no client certificate is refused.
func TestNATSTLS(t *testing.T) {
	files := testenv.TLS(t)
	url := tlsNATS(t, files, true)

	good := clients.NATSConfig{URL: url, Name: "tls-test", TLS: clients.TLSConfig{CAFile: files.CA, CertFile: files.ClientCert, KeyFile: files.ClientKey}}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	nc, js, err := clients.JetStream(good)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
		t.Fatalf("jetstream over TLS: %v", err)
	}
	if _, err := js.Publish(t.Context(), "t.1", []byte("over tls")); err != nil {
		t.Fatalf("publish over TLS: %v", err)
	}
	if !nc.TLSRequired() {
		t.Error("connection does not report TLS")
	}

	wrongCA := good
	wrongCA.TLS.CAFile = files.OtherCA
	start := time.Now()
	if nc, err := wrongCA.Connect(); err == nil {
		nc.Close()
		t.Fatal("connected with the wrong CA")
	} else if msg := err.Error(); !strings.Contains(msg, "nats.tls") || !strings.Contains(msg, files.OtherCA) || !strings.Contains(msg, "does not verify against the CA") {
		t.Errorf("wrong CA error %q: want it to name nats.tls and %s", msg, files.OtherCA)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("wrong CA took %s to fail; it must not retry", d)
	}

	// Without a client certificate the server refuses the handshake.
	// That is not the client's CA at fault, so the client keeps retrying
	// (a server may be rolling its settings) and never gets connected.
	noCert := good
	noCert.TLS.CertFile, noCert.TLS.KeyFile = "", ""
	nc2, err := noCert.Connect()
	if err != nil {
		t.Fatalf("connect without a client certificate: %v; want a retrying, unconnected client", err)
	}
	defer nc2.Close()
	testenv.Consistently(t, 2*time.Second, func() error {
		if nc2.IsConnected() {
			return errors.New("connected without a client certificate")
		}
		return nil
	})
}

// TestS3TLS checks the S3 client against a real versitygw that serves
// HTTPS only: with the CA an object goes in and comes back; with the wrong
// CA the first call fails naming the setting and the CA file.
func TestS3TLS(t *testing.T) {
	files := testenv.TLS(t)
	endpoint, ak, sk, bucket := testenv.S3TLS(t, files)
	good := clients.S3Config{Endpoint: endpoint, Bucket: bucket, Secure: true, AccessKey: ak, SecretKey: sk, TLS: clients.TLSConfig{CAFile: files.CA}}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	cl, err := good.Client()
	if err != nil {
		t.Fatal(err)
	}
	body := []byte("pcap bytes over https")
	if _, err := cl.PutObject(t.Context(), bucket, "k", bytes.NewReader(body), int64(len(body)), minio.PutObjectOptions{}); err != nil {
		t.Fatalf("put over TLS: %v", err)
	}
	obj, err := cl.GetObject(t.Context(), bucket, "k", minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(obj)
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("read back %q, %v", got, err)
	}

	wrong := good
	wrong.TLS.CAFile = files.OtherCA
	err = wrong.Check(t.Context())
	if err == nil || !strings.Contains(err.Error(), "s3.tls") || !strings.Contains(err.Error(), files.OtherCA) {
		t.Errorf("wrong CA: %v; want an error naming s3.tls and %s", err, files.OtherCA)
	}
	if err := good.Check(t.Context()); err != nil {
		t.Errorf("check with the right CA: %v", err)
	}
	plain := good
	plain.Secure, plain.TLS = false, clients.TLSConfig{}
	if err := plain.Check(t.Context()); err == nil {
		t.Error("plain HTTP to an HTTPS-only server succeeded")
	}
}

// TestTLSValidate checks the settings are checked before any connection:
// missing files, a CA file without certificates, half a key pair.
func TestTLSValidate(t *testing.T) {
	files := testenv.TLS(t)
	cases := map[string]struct {
		tls  clients.TLSConfig
		want string
	}{
		"ok":           {clients.TLSConfig{CAFile: files.CA, CertFile: files.ClientCert, KeyFile: files.ClientKey}, ""},
		"missing CA":   {clients.TLSConfig{CAFile: files.Dir + "/nope.pem"}, "x.tls.caFile: open"},
		"CA not a PEM": {clients.TLSConfig{CAFile: files.ClientKey}, "no PEM certificate"},
		"half a pair":  {clients.TLSConfig{CertFile: files.ClientCert}, "both certFile and keyFile"},
		"wrong key":    {clients.TLSConfig{CertFile: files.ClientCert, KeyFile: files.ServerKey}, "x.tls.certFile"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			err := tc.tls.Validate("x.tls")
			if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("Validate: %v, want %q", err, tc.want)
			}
		})
	}
	if w := (clients.TLSConfig{InsecureSkipVerify: true}).Warning("nats.tls"); !strings.Contains(w, "not verified") {
		t.Errorf("warning %q", w)
	}
	s3 := clients.S3Config{Endpoint: "h:1", Bucket: "b", TLS: clients.TLSConfig{CAFile: files.CA}}
	if err := s3.Validate(); err == nil || !strings.Contains(err.Error(), "s3.secure is false") {
		t.Errorf("s3 TLS without secure: %v", err)
	}
}

// TestClickHouseTLS checks the ClickHouse client against the dev server's
// secure native port: with the dev CA it queries; with another CA it fails
// naming the setting and the CA file; a plain client there gets nowhere.
func TestClickHouseTLS(t *testing.T) {
	db := testenv.ClickHouse(t)
	good := db.SecureConfig(t)
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	conn, err := good.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var one uint8
	if err := conn.QueryRow(t.Context(), "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("query over TLS: %d, %v", one, err)
	}
	files := testenv.TLS(t)
	wrong := good
	wrong.TLS.CAFile = files.OtherCA
	if err := wrong.Check(t.Context()); err == nil || !strings.Contains(err.Error(), "clickhouse.tls") || !strings.Contains(err.Error(), files.OtherCA) {
		t.Errorf("wrong CA: %v; want an error naming clickhouse.tls and %s", err, files.OtherCA)
	}
	plain := good
	// No password either: it would cross in clear text.
	plain.Secure, plain.TLS, plain.Password = false, clients.TLSConfig{}, ""
	plain.DialTimeout = 2 * time.Second
	if err := plain.Check(t.Context()); err == nil {
		t.Error("a plain client queried the secure port")
	}
	// The dev server's user has a password: without it, TLS alone gets
	// nowhere.
	if good.Password == "" {
		t.Fatalf("no ClickHouse password in %s: restart the services with deploy/dev/deps.sh up", testenv.EnvFilePath())
	}
	nopw := good
	nopw.Password = ""
	if err := nopw.Check(t.Context()); err == nil || !strings.Contains(err.Error(), "assword") {
		t.Errorf("no password: %v; want the server's refusal", err)
	}
}
