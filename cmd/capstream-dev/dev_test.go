package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/capstream/capstream/internal/config"
)

// devTestEnv are the overrides demo.sh sets from deps.sh's env file.
var devTestEnv = []string{
	"CAPSTREAM_DEV_CLICKHOUSE_ADDR=127.0.0.1:20198",
	"CAPSTREAM_DEV_S3_ENDPOINT=127.0.0.1:22925",
	"CAPSTREAM_DEV_S3_ACCESSKEY=ak",
	"CAPSTREAM_DEV_S3_SECRETKEY=sk-secret",
	"CAPSTREAM_DEV_NATS_STOREDIR=/tmp/x/nats",
	"CAPSTREAM_DEV_HTTP_LISTEN=127.0.0.1:0",
}

func TestDevExampleConfig(t *testing.T) {
	cfg := defaultDevSettings()
	if err := config.Load("../../deploy/dev/dev.yaml", devEnvPrefix, devTestEnv, cfg); err != nil {
		t.Fatalf("load dev.yaml: %v", err)
	}
	got := []string{cfg.ClickHouse.Addr, cfg.ClickHouse.Database, cfg.S3.Endpoint, cfg.Pcap.S3.Endpoint, cfg.Pcap.S3.SecretKey,
		cfg.S3.Bucket, cfg.Router.Namespace, cfg.Simulate.Node, cfg.Simulate.NetNS, cfg.NATS.StoreDir, cfg.HTTP.Listen}
	want := []string{"127.0.0.1:20198", "capstream_demo", "127.0.0.1:22925", "127.0.0.1:22925", "sk-secret",
		"capstream-demo", "sample-namespace", "demo-node", "capstream-demo", "/tmp/x/nats", "127.0.0.1:0"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("settings (-want +got):\n%s", diff)
	}
	if !cfg.Simulate.Enabled || cfg.Router.LeaderElection.Enabled || cfg.Pcap.MaxObjectAge != 10*time.Second ||
		cfg.Flows.IdleTimeout != 5*time.Second || cfg.Producer.AFPacket.RingBytes != 8<<20 {
		t.Errorf("file not applied: %+v", cfg)
	}
	if diff := cmp.Diff([]string{"demo-node"}, cfg.Nodes); diff != "" {
		t.Errorf("nodes (-want +got):\n%s", diff)
	}
	if len(cfg.Simulate.Pods) != 3 || cfg.Simulate.Pods[0].Labels["k8s-app"] != "sample-app" || cfg.Simulate.Pods[2].Labels["k8s-app"] != "other-app" {
		t.Errorf("pods: %+v", cfg.Simulate.Pods)
	}
	// The simulated node's producer captures inside its namespace; the
	// others in the process's own.
	if p := cfg.producerConfig("demo-node", "/var/run/netns/capstream-demo"); p.AFPacket.NetNS != "/var/run/netns/capstream-demo" || p.Node != "demo-node" {
		t.Errorf("producer config of the simulated node: %+v", p)
	}
	if p := cfg.producerConfig("other-node", "/var/run/netns/capstream-demo"); p.AFPacket.NetNS != "" {
		t.Errorf("producer of another node captures in %q", p.AFPacket.NetNS)
	}
	var out bytes.Buffer
	if err := config.Dump(&out, cfg); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "sk-secret") || !strings.Contains(out.String(), "REDACTED") {
		t.Errorf("secret key not redacted:\n%s", out.String())
	}
}

func TestDevConfigErrors(t *testing.T) {
	cases := map[string]struct {
		env  []string
		want string
	}{
		"no namespace":          {[]string{"CAPSTREAM_DEV_ROUTER_NAMESPACE="}, "router.namespace: required"},
		"simulated node absent": {[]string{"CAPSTREAM_DEV_NODES=node-a,node-b"}, `simulate.node "demo-node": not in nodes`},
		"namespace mismatch":    {[]string{"CAPSTREAM_DEV_SIMULATE_NAMESPACE=elsewhere"}, "router is scoped to"},
		"prefix mismatch":       {[]string{"CAPSTREAM_DEV_SIMULATE_INTERFACEPREFIX=veth"}, "differs from router.interfacePrefix"},
		"producer prefix":       {[]string{"CAPSTREAM_DEV_PRODUCER_INTERFACEPREFIX=veth"}, "every command would be refused"},
		"bad database":          {[]string{"CAPSTREAM_DEV_CLICKHOUSE_DATABASE=a;drop"}, "plain identifier"},
		"no kubeconfig":         {[]string{"CAPSTREAM_DEV_KUBE_KUBECONFIG="}, "kube.kubeconfig: required"},
		"bad port":              {[]string{"CAPSTREAM_DEV_NATS_PORT=70000"}, "nats.port"},
		"duplicate node":        {[]string{"CAPSTREAM_DEV_NODES=demo-node,demo-node"}, "listed twice"},
		"unknown setting":       {[]string{"CAPSTREAM_DEV_NOPE=1"}, "no such setting"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			cfg := defaultDevSettings()
			err := config.Load("../../deploy/dev/dev.yaml", devEnvPrefix, append(append([]string{}, devTestEnv...), tc.env...), cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestDevIgnoresDepsEnv: deps.sh's and testenv's CAPSTREAM_DEV_DIR and
// CAPSTREAM_DEV_ENV share the prefix but are not settings.
func TestDevIgnoresDepsEnv(t *testing.T) {
	t.Setenv("CAPSTREAM_DEV_ENV", "/tmp/capstream-dev/env")
	t.Setenv("CAPSTREAM_DEV_DIR", "/tmp/capstream-dev")
	for _, kv := range devTestEnv {
		name, value, _ := strings.Cut(kv, "=")
		t.Setenv(name, value)
	}
	var out, errOut bytes.Buffer
	c := newDevCmd()
	c.SetArgs([]string{"--config", "../../deploy/dev/dev.yaml", "--check"})
	c.SetOut(&out)
	c.SetErr(&errOut)
	if err := c.Execute(); err != nil || !strings.Contains(out.String(), "config ok") {
		t.Errorf("dev --check = %v %q %q", err, out.String(), errOut.String())
	}
}
