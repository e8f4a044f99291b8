package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/capstream/capstream/internal/config"
	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/router"
)

func TestRouterExampleConfig(t *testing.T) {
	cfg := router.DefaultSettings()
	env := []string{
		"CAPSTREAM_ROUTER_NATS_URL=nats://10.0.0.1:4222",
		"CAPSTREAM_ROUTER_NATS_PASSWORD=s3cret",
		"CAPSTREAM_ROUTER_NATS_USER=router",
		"CAPSTREAM_ROUTER_ROUTER_LEADERELECTION_NAMESPACE=capstream",
	}
	if err := config.Load("../../deploy/dev/router.yaml", router.EnvPrefix, env, cfg); err != nil {
		t.Fatalf("load: %v", err)
	}
	if cfg.NATS.URL != "nats://10.0.0.1:4222" || cfg.Router.LeaderElection.Namespace != "capstream" {
		t.Errorf("overrides not applied: %+v", cfg)
	}
	if cfg.Router.StatusFlushDelay != time.Second || cfg.Router.LeaderElection.LeaseDuration != 15*time.Second ||
		cfg.HTTP.Listen != "127.0.0.1:9101" || cfg.Router.InterfacePrefix != "cali" {
		t.Errorf("file not applied: %+v", cfg)
	}
	var out bytes.Buffer
	if err := config.Dump(&out, cfg); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "s3cret") || !strings.Contains(out.String(), "REDACTED") {
		t.Errorf("password not redacted:\n%s", out.String())
	}
}

func TestRouterConfigErrors(t *testing.T) {
	cfg := router.DefaultSettings()
	env := []string{"CAPSTREAM_ROUTER_ROUTER_INTERFACEPREFIX=toolong", "CAPSTREAM_ROUTER_NATS_TOKEN=t", "CAPSTREAM_ROUTER_NATS_USER=u"}
	err := config.Load("../../deploy/dev/router.yaml", router.EnvPrefix, env, cfg)
	if err == nil || !strings.Contains(err.Error(), "interfacePrefix") || !strings.Contains(err.Error(), "only one of") {
		t.Fatalf("load: %v", err)
	}
}

func TestRouterCheckFlag(t *testing.T) {
	c := newRouterCmd()
	var out bytes.Buffer
	c.SetOut(&out)
	c.SetArgs([]string{"--config", "../../deploy/dev/router.yaml", "--check"})
	if err := c.Execute(); err != nil {
		t.Fatalf("--check: %v", err)
	}
	if !strings.Contains(out.String(), "config ok") {
		t.Errorf("output %q", out.String())
	}
}

// TestRouterServes runs `capstream router` wiring against the real API
// server and an embedded JetStream: it becomes ready, leads, serves
// metrics, and stops cleanly on cancel.
func TestRouterServes(t *testing.T) {
	kube := testenv.Kube(t)
	js := testenv.NATS(t)
	ns := kube.Namespace(t, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	path := filepath.Join(t.TempDir(), "router.yaml")
	yaml := fmt.Sprintf("kube:\n  kubeconfig: %s\nnats:\n  url: %s\nlog:\n  level: warn\nhttp:\n  listen: %s\n"+
		"router:\n  namespace: %[4]s\n  leaderElection:\n    namespace: %[4]s\n    leaseDuration: 3s\n    renewDeadline: 2s\n    retryPeriod: 200ms\n",
		kube.Kubeconfig, js.URL, addr, ns)
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := router.DefaultSettings()
	if err := config.Load(path, router.EnvPrefix, nil, cfg); err != nil {
		t.Fatal(err)
	}
	r := testenv.Start(t, "router", func(ctx context.Context) error { return runRouter(ctx, cfg) })
	get := func(p string) (int, string, error) {
		resp, err := http.Get("http://" + addr + p)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		code, body, err := get("/readyz")
		if err != nil || code != http.StatusOK {
			return fmt.Errorf("readyz %d %q %v", code, body, err)
		}
		code, body, err = get("/metrics")
		if err != nil || code != http.StatusOK || !strings.Contains(body, "capstream_router_leader 1") {
			return fmt.Errorf("metrics %d %v: not leading yet", code, err)
		}
		return nil
	})
	if err := r.Stop(); err != nil {
		t.Fatalf("router: %v", err)
	}
}
