package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// child is one sink process.
type child struct {
	mem        *sinkMemory
	cmd        *exec.Cmd
	metricsURL string
	gauge      string
	done       chan struct{}
	err        error // set before done closes
	mu         sync.Mutex
}

// startSink writes the sink's configuration (connections only: every
// other setting is the default, which is what is measured) and starts it.
func (e *memEnv) startSink(ctx context.Context, name string, mem *sinkMemory) (*child, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "log:\n  level: warn\n  format: text\nhttp:\n  listen: %s\n", addr)
	// The bench's server is plaintext and anonymous, as the JetStream
	// floor it is compared with: the sinks must be told so explicitly.
	fmt.Fprintf(&cfg, "nats:\n  url: %s\n  name: capstream-sink-%s\n  plaintext: true\n  anonymous: true\n", e.natsURL, name)
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
	path := filepath.Join(e.dir, "sink-"+name+".yaml")
	if err := os.WriteFile(path, []byte(cfg.String()), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, e.bin, "sink", name, "--config", path)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = exitTimeout
	// Overrides from the harness's own environment would change what is
	// measured: drop them.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CAPSTREAM_SINK_") {
			envs = append(envs, kv)
		}
	}
	cmd.Env = envs
	cmd.Stdout = &prefixWriter{w: e.o.Log, prefix: "bench: sink " + name + ": "}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start sink %s: %w", name, err)
	}
	c := &child{mem: mem, cmd: cmd, metricsURL: "http://" + addr + "/metrics", gauge: gauge, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and waits for the exit.
func (c *child) stop() {
	if !c.exited() {
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-c.done:
	case <-time.After(exitTimeout):
		_ = c.cmd.Process.Kill()
		<-c.done
		c.mem.Exit = fmt.Sprintf("killed: not exited %s after SIGTERM", exitTimeout)
		return
	}
	if c.err != nil {
		c.mem.Exit = c.err.Error()
	}
}

// prefixWriter writes each line of a child's output to w with a prefix.
type prefixWriter struct {
	w      io.Writer
	prefix string
	mu     sync.Mutex
	buf    []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			break
		}
		fmt.Fprintf(p.w, "%s%s\n", p.prefix, p.buf[:i])
		p.buf = p.buf[i+1:]
	}
	return len(b), nil
}
