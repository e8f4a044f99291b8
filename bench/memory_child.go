package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
)

// child is one sink process.
type child struct {
	*proc
	mem   *sinkMemory
	gauge string
	mu    sync.Mutex
}

// startSink writes the sink's configuration (connections only: every
// other setting is the default, which is what is measured) and starts it.
func (e *memEnv) startSink(ctx context.Context, name string, mem *sinkMemory) (*child, error) {
	var cfg strings.Builder
	// The bench's server is plaintext and anonymous, as the JetStream
	// floor it is compared with: the sinks must be told so explicitly.
	cfg.WriteString(natsYAML(e.natsURL, "capstream-sink-"+name))
	fmt.Fprintf(&cfg, "clickhouse:\n  addr: %q\n  database: %q\n  username: %q\n  secure: %t\n", e.st.ch.Addr, e.st.ch.Database, e.st.ch.Username, e.st.ch.Secure)
	if e.st.ch.TLS.CAFile != "" {
		fmt.Fprintf(&cfg, "  tls:\n    caFile: %q\n", e.st.ch.TLS.CAFile)
	}
	prefix := "CAPSTREAM_SINK_FLOWS_"
	gauge := "capstream_sink_flows_open_flows"
	envs := []string{}
	if name == "pcap" {
		prefix, gauge = "CAPSTREAM_SINK_PCAP_", "capstream_sink_pcap_open_objects"
		fmt.Fprintf(&cfg, "s3:\n  endpoint: %q\n  bucket: %q\n  secure: %t\n  tls:\n    caFile: %q\n", e.st.s3.Endpoint, e.st.s3.Bucket, e.st.s3.Secure, e.st.s3.TLS.CAFile)
		envs = append(envs, prefix+"S3_ACCESSKEY="+e.st.s3.AccessKey, prefix+"S3_SECRETKEY="+e.st.s3.SecretKey)
		if e.o.MemoryStopAfter > 0 {
			fmt.Fprintf(&cfg, "pcap:\n  stopAfter: %s\n", e.o.MemoryStopAfter)
		}
	} else if e.o.MemoryStopAfter > 0 {
		fmt.Fprintf(&cfg, "flows:\n  stopAfter: %s\n", e.o.MemoryStopAfter)
	}
	if e.st.ch.Password != "" {
		envs = append(envs, prefix+"CLICKHOUSE_PASSWORD="+e.st.ch.Password)
	}
	p, err := startProc(ctx, e.o.Log, e.dir, e.bin, procSpec{Args: []string{"sink", name}, Name: "sink " + name,
		Config: cfg.String(), File: "sink-" + name + ".yaml", Env: envs, Drop: []string{"CAPSTREAM_SINK_"}})
	if err != nil {
		return nil, err
	}
	return &child{proc: p, mem: mem, gauge: gauge}, nil
}

// stop sends SIGTERM and waits for the exit.
func (c *child) stop() { c.mem.Exit = c.proc.stop() }
