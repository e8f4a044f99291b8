package run

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
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
	notReady := errors.New("nats disconnected")
	var ready atomic.Bool
	check := func() error {
		if ready.Load() {
			return nil
		}
		return notReady
	}
	s := NewServer(HTTPConfig{Listen: "127.0.0.1:0"}, reg, map[string]Check{"nats": check},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
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
	if code, body := get("/readyz"); code != 503 || !strings.Contains(body, "nats: nats disconnected") {
		t.Errorf("/readyz not ready = %d %q", code, body)
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
