package run

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/capstream/capstream/internal/testenv"
)

func TestServerEndpoints(t *testing.T) {
	reg := NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "capstream_test_things_total", Help: "things"})
	reg.MustRegister(c)
	c.Add(3)
	notReady := errors.New("nats disconnected from nats://user:secret@10.0.0.9:4222")
	var ready atomic.Bool
	check := func() error {
		if ready.Load() {
			return nil
		}
		return notReady
	}
	var logs testenv.Buffer
	s := NewServer(HTTPConfig{Listen: "127.0.0.1:0"}, reg, map[string]Check{"nats": check},
		slog.New(slog.NewTextHandler(&logs, nil)))
	r := testenv.Start(t, "http", s.Run)
	addr, err := s.Addr(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr.String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("/healthz = %d", code)
	}
	// The caller learns which check fails, never why: the reason (which
	// can hold addresses, names, credentials) goes to the log, once.
	for range 3 {
		if code, body := get("/readyz"); code != 503 || body != "nats: not ready\n" {
			t.Errorf("/readyz not ready = %d %q", code, body)
		}
	}
	if n := strings.Count(logs.String(), "not ready"); n != 1 || !strings.Contains(logs.String(), "nats disconnected") {
		t.Errorf("want the reason logged once, log:\n%s", logs.String())
	}
	ready.Store(true)
	if code, body := get("/readyz"); code != 200 || !strings.Contains(body, "nats: ok") {
		t.Errorf("/readyz ready = %d %q", code, body)
	}
	if _, body := get("/metrics"); !strings.Contains(body, "capstream_test_things_total 3") || !strings.Contains(body, "go_goroutines") {
		t.Errorf("/metrics lacks counters:\n%.500s", body)
	}
	if err := r.Stop(); err != nil {
		t.Errorf("Run after cancel = %v", err)
	}
}

func TestLogConfigValidate(t *testing.T) {
	if err := (LogConfig{Level: "debug", Format: "json"}).Validate(); err != nil {
		t.Error(err)
	}
	err := (LogConfig{Level: "loud", Format: "xml"}).Validate()
	if err == nil || !strings.Contains(err.Error(), "log.level") || !strings.Contains(err.Error(), "log.format") {
		t.Errorf("Validate = %v, want both problems", err)
	}
}

// TestServerTLS: with a certificate the listener speaks HTTPS only; a
// client with the CA gets /healthz, a plain HTTP client gets nothing.
func TestServerTLS(t *testing.T) {
	files := testenv.TLS(t)
	cfg := HTTPConfig{Listen: "127.0.0.1:0", CertFile: files.ServerCert, KeyFile: files.ServerKey}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	s := NewServer(cfg, NewRegistry(), nil, testenv.Logger(t))
	testenv.Start(t, "https", s.Run)
	addr, err := s.Addr(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(files.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	resp, err := hc.Get("https://" + addr.String() + "/healthz")
	if err != nil {
		t.Fatalf("https /healthz: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("https /healthz = %d", resp.StatusCode)
	}
	if resp, err := http.Get("http://" + addr.String() + "/metrics"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("plain HTTP got the metrics")
		}
	}
	if err := (HTTPConfig{Listen: ":1", CertFile: files.ServerCert}).Validate(); err == nil {
		t.Error("a certificate without a key validated")
	}
}
