package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/capstream/capstream/internal/config"
	"github.com/capstream/capstream/sink"
	"github.com/capstream/capstream/sink/flowstore"
	"github.com/capstream/capstream/sink/pcapstore"
)

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
	if pcap.MemoryLimit != 192<<20 || flows.MemoryLimit != 192<<20 {
		t.Errorf("default memory limits %d and %d, want 192 MiB", pcap.MemoryLimit, flows.MemoryLimit)
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
	if err := config.Load("", flowstore.EnvPrefix, []string{"CAPSTREAM_SINK_FLOWS_MEMORYLIMIT=0"}, cfg); err != nil || cfg.MemoryLimit != 0 {
		t.Errorf("memoryLimit 0 (none): %d, %v", cfg.MemoryLimit, err)
	}
}
