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

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/cobra"

	"github.com/capstream/capstream/internal/config"
	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/producer"
	"github.com/capstream/capstream/router"
	"github.com/capstream/capstream/sink"
	"github.com/capstream/capstream/sink/flowstore"
	"github.com/capstream/capstream/sink/pcapstore"
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

// TestServicesRefuseInsecureNATS: a service with the default NATS
// settings (nats://, no credentials) does not start; it names both
// missing pieces and the explicit settings that allow them, which then
// load with a warning each.
func TestServicesRefuseInsecureNATS(t *testing.T) {
	cfg := router.DefaultSettings()
	err := config.Load("", router.EnvPrefix, nil, cfg)
	if err == nil || !strings.Contains(err.Error(), "is not TLS") || !strings.Contains(err.Error(), "nats.plaintext") ||
		!strings.Contains(err.Error(), "no credentials") || !strings.Contains(err.Error(), "nats.anonymous") {
		t.Fatalf("defaults: %v; want refusals naming nats.plaintext and nats.anonymous", err)
	}
	cfg = router.DefaultSettings()
	if err := config.Load("", router.EnvPrefix, []string{"CAPSTREAM_ROUTER_NATS_PLAINTEXT=true", "CAPSTREAM_ROUTER_NATS_ANONYMOUS=true"}, cfg); err != nil {
		t.Fatalf("explicit plaintext and anonymous: %v", err)
	}
	if w := strings.Join(cfg.NATS.Warnings(), "\n"); !strings.Contains(w, "clear text") || !strings.Contains(w, "without credentials") {
		t.Errorf("warnings %q", w)
	}
	cfg = router.DefaultSettings()
	err = config.Load("", router.EnvPrefix, []string{"CAPSTREAM_ROUTER_NATS_PLAINTEXT=true", "CAPSTREAM_ROUTER_NATS_URL=tls://h:4222",
		"CAPSTREAM_ROUTER_NATS_ANONYMOUS=true", "CAPSTREAM_ROUTER_NATS_USER=u"}, cfg)
	if err == nil || !strings.Contains(err.Error(), "nats.plaintext is set but") || !strings.Contains(err.Error(), "nats.anonymous is set together") {
		t.Errorf("contradictions: %v", err)
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
	checkConfig(t, newRouterCmd(), "../../deploy/dev/router.yaml")
}

// checkConfig runs the service command c with --config path --check: it
// must succeed and say so.
func checkConfig(t *testing.T, c *cobra.Command, path string) {
	t.Helper()
	var out bytes.Buffer
	c.SetOut(&out)
	c.SetArgs([]string{"--config", path, "--check"})
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
	// The test server is plaintext and anonymous: the service must be
	// told so explicitly.
	yaml := fmt.Sprintf("kube:\n  kubeconfig: %s\nnats:\n  url: %s\n  plaintext: true\n  anonymous: true\nlog:\n  level: warn\nhttp:\n  listen: %s\n"+
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

func TestProducerExampleConfig(t *testing.T) {
	cfg := producer.DefaultSettings()
	env := []string{"CAPSTREAM_PRODUCER_NODE=node-7", "CAPSTREAM_PRODUCER_NATS_URL=nats://10.0.0.1:4222"}
	if err := config.Load("../../deploy/dev/producer.yaml", producer.EnvPrefix, env, cfg); err != nil {
		t.Fatalf("load: %v", err)
	}
	if cfg.Producer.Node != "node-7" || cfg.NATS.URL != "nats://10.0.0.1:4222" {
		t.Errorf("overrides not applied: node %q url %q", cfg.Producer.Node, cfg.NATS.URL)
	}
	if cfg.Producer.BatchDelay != 100*time.Millisecond || cfg.HTTP.Listen != "127.0.0.1:9102" {
		t.Errorf("file not applied: %+v", cfg)
	}
	var out bytes.Buffer
	if err := config.Dump(&out, cfg); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "node: node-7") {
		t.Errorf("dump:\n%s", out.String())
	}
}

func TestProducerConfigNeedsNode(t *testing.T) {
	cfg := producer.DefaultSettings()
	err := config.Load("../../deploy/dev/producer.yaml", producer.EnvPrefix, []string{"CAPSTREAM_PRODUCER_NODE="}, cfg)
	if err == nil || !strings.Contains(err.Error(), "node") {
		t.Fatalf("load without node: %v", err)
	}
}

func TestProducerCheckFlag(t *testing.T) {
	t.Setenv("CAPSTREAM_PRODUCER_NODE", "node-1")
	checkConfig(t, newProducerCmd(), "../../deploy/dev/producer.yaml")
}

func TestSinkExampleConfigs(t *testing.T) {
	env := []string{
		"CAPSTREAM_SINK_PCAP_S3_ACCESSKEY=ak",
		"CAPSTREAM_SINK_PCAP_S3_SECRETKEY=sk",
		"CAPSTREAM_SINK_PCAP_CLICKHOUSE_PASSWORD=chpw",
		"CAPSTREAM_SINK_FLOWS_CLICKHOUSE_PASSWORD=chpw",
		"CAPSTREAM_SINK_FLOWS_FLOWS_IDLETIMEOUT=10s",
	}
	pcap := pcapstore.DefaultSettings()
	if err := config.Load("../../deploy/dev/sink-pcap.yaml", pcapstore.EnvPrefix, env, pcap); err != nil {
		t.Fatalf("load sink-pcap.yaml: %v", err)
	}
	if diff := cmp.Diff([]string{"ak", "sk", "capstream", "ak"}, []string{pcap.S3.AccessKey, pcap.S3.SecretKey, pcap.Pcap.Prefix, pcap.Pcap.S3.AccessKey}); diff != "" {
		t.Errorf("pcap settings (-want +got):\n%s", diff)
	}
	flows := flowstore.DefaultSettings()
	if err := config.Load("../../deploy/dev/sink-flows.yaml", flowstore.EnvPrefix, env, flows); err != nil {
		t.Fatalf("load sink-flows.yaml: %v", err)
	}
	if flows.Flows.IdleTimeout != 10*time.Second || flows.ClickHouse.Password != "chpw" {
		t.Errorf("flows overrides not applied: idle %s", flows.Flows.IdleTimeout)
	}
	for name, cfg := range map[string]any{"pcap": pcap, "flows": flows} {
		var out bytes.Buffer
		if err := config.Dump(&out, cfg); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out.String(), "chpw") || strings.Contains(out.String(), "sk\n") {
			t.Errorf("%s dump leaks a secret:\n%s", name, out.String())
		}
	}
}

func TestSinkConfigRejectsUnknown(t *testing.T) {
	cfg := pcapstore.DefaultSettings()
	err := config.Load("", pcapstore.EnvPrefix, []string{"CAPSTREAM_SINK_PCAP_S3_BUCKET=", "CAPSTREAM_SINK_PCAP_S3_ENDPOINT=x:1", "CAPSTREAM_SINK_PCAP_PCAP_MAXOBJECTBYTES=10"}, cfg)
	if err == nil || !strings.Contains(err.Error(), "s3.bucket") || !strings.Contains(err.Error(), "maxObjectBytes") {
		t.Errorf("want errors for the bucket and object size, got %v", err)
	}
}

func TestSinkMemoryLimit(t *testing.T) {
	pcap, flows := pcapstore.DefaultSettings(), flowstore.DefaultSettings()
	if pcap.MemoryLimit != 224<<20 || flows.MemoryLimit != 224<<20 {
		t.Errorf("default memory limits %d and %d, want 224 MiB", pcap.MemoryLimit, flows.MemoryLimit)
	}
	// The example configs say the default.
	for _, f := range []struct {
		path, prefix string
		cfg          any
	}{
		{"../../deploy/dev/sink-pcap.yaml", pcapstore.EnvPrefix, pcapstore.DefaultSettings()},
		{"../../deploy/dev/sink-flows.yaml", flowstore.EnvPrefix, flowstore.DefaultSettings()},
	} {
		var lim int64
		switch c := f.cfg.(type) {
		case *pcapstore.Settings:
			c.MemoryLimit = 0
			if err := config.Load(f.path, f.prefix, []string{f.prefix + "_S3_ACCESSKEY=a", f.prefix + "_S3_SECRETKEY=b"}, c); err != nil {
				t.Fatal(err)
			}
			lim = c.MemoryLimit
		case *flowstore.Settings:
			c.MemoryLimit = 0
			if err := config.Load(f.path, f.prefix, nil, c); err != nil {
				t.Fatal(err)
			}
			lim = c.MemoryLimit
		}
		if lim != sink.DefaultMemoryLimit {
			t.Errorf("%s: memoryLimit %d, want the default %d", f.path, lim, sink.DefaultMemoryLimit)
		}
	}
	for _, v := range []string{"1048576", "-1"} {
		cfg := flowstore.DefaultSettings()
		err := config.Load("", flowstore.EnvPrefix, []string{"CAPSTREAM_SINK_FLOWS_MEMORYLIMIT=" + v}, cfg)
		if err == nil || !strings.Contains(err.Error(), "memoryLimit") {
			t.Errorf("memoryLimit %s: want an error naming it, got %v", v, err)
		}
	}
	cfg := flowstore.DefaultSettings()
	if err := config.Load("", flowstore.EnvPrefix, []string{"CAPSTREAM_SINK_FLOWS_MEMORYLIMIT=0", "CAPSTREAM_SINK_FLOWS_NATS_PLAINTEXT=true", "CAPSTREAM_SINK_FLOWS_NATS_ANONYMOUS=true"}, cfg); err != nil || cfg.MemoryLimit != 0 {
		t.Errorf("memoryLimit 0 (none): %d, %v", cfg.MemoryLimit, err)
	}
}
