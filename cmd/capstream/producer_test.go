package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/capstream/capstream/internal/config"
	"github.com/capstream/capstream/producer"
)

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
	c := newProducerCmd()
	var out bytes.Buffer
	c.SetOut(&out)
	c.SetArgs([]string{"--config", "../../deploy/dev/producer.yaml", "--check"})
	if err := c.Execute(); err != nil {
		t.Fatalf("--check: %v", err)
	}
	if !strings.Contains(out.String(), "config ok") {
		t.Errorf("output %q", out.String())
	}
}
