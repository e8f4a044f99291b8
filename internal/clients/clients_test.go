package clients_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/capstream/capstream/internal/clients"
	"github.com/capstream/capstream/internal/testenv"
)

func TestValidate(t *testing.T) {
	cases := map[string]struct {
		err  error
		want string // "" means valid
	}{
		"nats default":         {clients.DefaultNATSConfig("x").Validate(), ""},
		"nats no url":          {clients.NATSConfig{}.Validate(), "nats.url: required"},
		"nats two credentials": {clients.NATSConfig{URL: "nats://h:1", CredsFile: "f", Token: "t"}.Validate(), "only one of"},
		"nats user and pass":   {clients.NATSConfig{URL: "nats://h:1", User: "u", Password: "p"}.Validate(), ""},
		"clickhouse default":   {clients.DefaultClickHouseConfig().Validate(), ""},
		"clickhouse no addr":   {clients.ClickHouseConfig{Database: "d", DialTimeout: time.Second, ReadTimeout: time.Second}.Validate(), "clickhouse.addr: required"},
		"clickhouse timeouts":  {clients.ClickHouseConfig{Addr: "h:1", Database: "d"}.Validate(), "clickhouse.readTimeout"},
		"s3 no endpoint":       {clients.DefaultS3Config().Validate(), "s3.endpoint: required"},
		"s3 no bucket":         {clients.S3Config{Endpoint: "h:1"}.Validate(), "s3.bucket: required"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			switch {
			case tc.want == "" && tc.err != nil:
				t.Errorf("want valid, got %v", tc.err)
			case tc.want != "" && (tc.err == nil || !strings.Contains(tc.err.Error(), tc.want)):
				t.Errorf("want an error containing %q, got %v", tc.want, tc.err)
			}
		})
	}
}

func TestRedactURL(t *testing.T) {
	got := clients.RedactURL("nats://u:secret@h1:4222,nats://h2:4222,tls://tok@h3:1")
	if want := "nats://REDACTED@h1:4222,nats://h2:4222,tls://REDACTED@h3:1"; got != want {
		t.Errorf("clients.RedactURL = %q, want %q", got, want)
	}
}

// TestJetStreamAuth connects through the one constructor to a real server
// that requires a user: the right password gets a working JetStream
// client, a wrong one is refused by the server.
func TestJetStreamAuth(t *testing.T) {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
		NoLog: true, NoSigs: true, Username: "router", Password: "pw"})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(srv.Shutdown)
	nc, js, err := clients.JetStream(clients.NATSConfig{URL: srv.ClientURL(), Name: "capstream-test", User: "router", Password: "pw"})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	testenv.Eventually(t, 10*time.Second, func() error {
		_, err := js.AccountInfo(t.Context())
		return err
	})
	// RetryOnFailedConnect keeps a refused client trying in the
	// background; the server's verdict shows as the connection's last
	// error.
	bad, err := clients.NATSConfig{URL: srv.ClientURL(), User: "router", Password: "wrong"}.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	testenv.Eventually(t, 10*time.Second, func() error {
		if err := bad.LastError(); err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization") {
			return fmt.Errorf("no authorization error yet (last error %v)", err)
		}
		return nil
	})
	if bad.IsConnected() {
		t.Error("connected with a wrong password")
	}
}

// TestTokenFile: the token is read from the file at every connect, so a
// rotated projected service-account token is the one sent at the next
// reconnect, and a refused token does not end the connection's retries.
func TestTokenFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte("first-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := clients.NATSConfig{URL: "tls://h:1", TokenFile: path}
	if err := c.Validate(); err != nil {
		t.Fatalf("valid token file: %v", err)
	}
	if err := c.Secured(); err != nil {
		t.Errorf("token file over TLS: %v, want secured", err)
	}
	opts, err := c.Options()
	if err != nil {
		t.Fatal(err)
	}
	o := nats.GetDefaultOptions()
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			t.Fatal(err)
		}
	}
	if o.TokenHandler == nil || !o.IgnoreAuthErrorAbort {
		t.Fatalf("token handler set %v, ignore auth error abort %v: want both", o.TokenHandler != nil, o.IgnoreAuthErrorAbort)
	}
	var got []string
	got = append(got, o.TokenHandler())
	if err := os.WriteFile(path, []byte("  rotated-token "), 0o600); err != nil {
		t.Fatal(err)
	}
	got = append(got, o.TokenHandler())
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	got = append(got, o.TokenHandler())
	if diff := cmp.Diff([]string{"first-token", "rotated-token", ""}, got); diff != "" {
		t.Errorf("tokens sent (-want +got):\n%s", diff)
	}

	for name, bad := range map[string]clients.NATSConfig{
		"missing file":     {URL: "tls://h:1", TokenFile: path},
		"token and file":   {URL: "tls://h:1", Token: "t", TokenFile: path},
		"empty file":       {URL: "tls://h:1", TokenFile: testenv.File(t, "empty", " \n")},
		"oversize file":    {URL: "tls://h:1", TokenFile: testenv.File(t, "big", strings.Repeat("x", 17<<10))},
		"anonymous + file": {URL: "tls://h:1", TokenFile: testenv.File(t, "tok", "x"), Anonymous: true},
	} {
		if err := bad.Validate(); err == nil {
			t.Errorf("%s: valid, want an error", name)
		}
	}
}
