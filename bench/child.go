package main

// The phases that measure a component as a process of its own (the memory
// phase's sinks, the churn phase's router and producer, the scale phases'
// router or producer) run the `capstream` binary through one helper: a
// proc, started on a configuration file with its health and metrics server
// on a free local port, scraped, read from /proc and stopped with SIGTERM.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// heapInuse is the Go collector's heap-in-use gauge, which every component
// serves.
const heapInuse = "go_memstats_heap_inuse_bytes"

var scrapeClient = &http.Client{Timeout: time.Second}

// procSpec says how to start a proc.
type procSpec struct {
	// Args follow the binary: the subcommand, e.g. "router" or "sink",
	// "pcap".
	Args []string
	// Name is what log lines and errors call the process.
	Name string
	// Config is its configuration file but the log and http sections,
	// which startProc adds; File is the name it is written under in dir.
	Config, File string
	// Env is added to the harness's environment, from which every
	// variable starting with one of Drop is left out: an override would
	// change what is measured.
	Env, Drop []string
	// GCTrace runs the process with GODEBUG=gctrace=1 and follows its
	// collections (gcCount, lastLive, peakLive) instead of logging the
	// trace.
	GCTrace bool
	// Client scrapes /metrics; nil is scrapeClient.
	Client *http.Client
}

// proc is a `capstream` subcommand running as a child process.
type proc struct {
	name       string
	cmd        *exec.Cmd
	metricsURL string
	readyURL   string
	client     *http.Client
	done       chan struct{}
	err        error // set before done closes
	stopOnce   sync.Once
	exit       string

	mu      sync.Mutex
	gcs     int
	live    int64 // the last collection's
	maxLive int64
}

// startProc writes s.Config (plus the log and http sections) under dir
// and starts bin with it; the process's output goes to log, each line
// prefixed with its name.
func startProc(ctx context.Context, log io.Writer, dir, bin string, s procSpec) (*proc, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	cfg := s.Config + fmt.Sprintf("log:\n  level: warn\n  format: text\nhttp:\n  listen: %s\n", addr)
	path := filepath.Join(dir, s.File)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, bin, append(s.Args, "--config", path)...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = exitTimeout
	var env []string
	if s.GCTrace {
		env = append(env, "GODEBUG=gctrace=1")
	}
	env = append(env, s.Env...)
	for _, kv := range os.Environ() {
		if !slices.ContainsFunc(s.Drop, func(p string) bool { return strings.HasPrefix(kv, p) }) {
			env = append(env, kv)
		}
	}
	cmd.Env = env
	p := &proc{name: s.Name, cmd: cmd, metricsURL: "http://" + addr + "/metrics", readyURL: "http://" + addr + "/readyz",
		client: s.Client, done: make(chan struct{})}
	if p.client == nil {
		p.client = scrapeClient
	}
	cmd.Stdout = &prefixWriter{w: log, prefix: "bench: " + s.Name + ": "}
	cmd.Stderr = cmd.Stdout
	if s.GCTrace {
		cmd.Stderr = &gcTraceWriter{c: p, rest: cmd.Stdout}
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", s.Name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (c *proc) pid() int { return c.cmd.Process.Pid }

func (c *proc) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM once, waits for the exit and says how it went (""
// for a clean exit).
func (c *proc) stop() string {
	c.stopOnce.Do(func() {
		if !c.exited() {
			_ = c.cmd.Process.Signal(syscall.SIGTERM)
		}
		select {
		case <-c.done:
			if c.err != nil {
				c.exit = c.err.Error()
			}
		case <-time.After(exitTimeout):
			_ = c.cmd.Process.Kill()
			<-c.done
			c.exit = fmt.Sprintf("killed: not exited %s after SIGTERM", exitTimeout)
		}
	})
	return c.exit
}

// until polls fn every 100ms until it succeeds, the process exits or
// timeout passes.
func (c *proc) until(ctx context.Context, timeout time.Duration, fn func() error) error {
	return poll(ctx, timeout, 100*time.Millisecond, c.done, func(last error) error {
		return fmt.Errorf("%s exited: %v (waiting for: %w)", c.name, c.err, last)
	}, fn)
}

// poll calls fn every `every` until it returns nil. It gives up once
// timeout has passed, when ctx ends, or when abort closes: then the error
// is abortErr of fn's last.
func poll(ctx context.Context, timeout, every time.Duration, abort <-chan struct{}, abortErr func(last error) error, fn func() error) error {
	deadline := time.Now().Add(timeout)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		err := fn()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-abort:
			return abortErr(err)
		case <-t.C:
		}
	}
}

// waitReady polls /readyz until it answers 200.
func (c *proc) waitReady(ctx context.Context, timeout time.Duration) error {
	err := c.until(ctx, timeout, func() error {
		resp, err := c.client.Get(c.readyURL)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz: %s", resp.Status)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%s not ready: %w", c.name, err)
	}
	return nil
}

// metrics returns the process's /metrics body.
func (c *proc) metrics() ([]byte, error) {
	resp, err := c.client.Get(c.metricsURL)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

// eachSample calls fn with every series of a /metrics body and its value.
func eachSample(raw []byte, fn func(series string, v float64)) {
	for line := range bytes.Lines(raw) {
		series, v, ok := strings.Cut(strings.TrimSpace(string(line)), " ")
		if !ok {
			continue
		}
		if x, err := strconv.ParseFloat(v, 64); err == nil {
			fn(series, x)
		}
	}
}

// scrape returns metric name, summed over its series.
func (c *proc) scrape(name string) (float64, error) {
	raw, err := c.metrics()
	if err != nil {
		return 0, err
	}
	found, sum := false, 0.0
	eachSample(raw, func(series string, v float64) {
		if series == name || strings.HasPrefix(series, name+"{") {
			found, sum = true, sum+v
		}
	})
	if !found {
		return 0, fmt.Errorf("no %s on %s", name, c.metricsURL)
	}
	return sum, nil
}

// scrapeVec returns the series of metric name by the value of label.
func (c *proc) scrapeVec(name, label string) (map[string]float64, error) {
	raw, err := c.metrics()
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	eachSample(raw, func(series string, v float64) {
		if !strings.HasPrefix(series, name+"{") {
			return
		}
		if _, rest, ok := strings.Cut(series, label+`="`); ok {
			val, _, _ := strings.Cut(rest, `"`)
			out[val] += v
		}
	})
	return out, nil
}

// memory returns heap in use and goroutines from /metrics and VmRSS; a
// figure that could not be read is 0.
func (c *proc) memory() (inuse int64, goroutines float64, rss int64) {
	if raw, err := c.metrics(); err == nil {
		eachSample(raw, func(series string, v float64) {
			switch series {
			case heapInuse:
				inuse = int64(v)
			case "go_goroutines":
				goroutines = v
			}
		})
	}
	if !c.exited() {
		rss, _, _ = procMem(c.pid())
	}
	return inuse, goroutines, rss
}

// procMem returns VmRSS and VmHWM of pid, in bytes.
func procMem(pid int) (rss, hwm int64, err error) {
	f, err := procStatus(pid, "VmRSS", "VmHWM")
	if err != nil {
		return 0, 0, err
	}
	rss, hwm = f["VmRSS"], f["VmHWM"]
	if rss == 0 || hwm == 0 {
		return 0, 0, fmt.Errorf("/proc/%d/status: no VmRSS or VmHWM", pid)
	}
	return rss, hwm, nil
}

// procStatus returns the fields keys of /proc/<pid>/status, which are in
// kB, in bytes; a key missing there is missing from the map.
func procStatus(pid int, keys ...string) (map[string]int64, error) {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for line := range strings.Lines(string(raw)) {
		k, v, ok := strings.Cut(line, ":")
		if !ok || !slices.Contains(keys, k) {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return nil, fmt.Errorf("/proc/%d/status: %s", pid, strings.TrimSpace(line))
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return nil, err
		}
		out[k] = kb << 10
	}
	return out, nil
}

func (c *proc) gcCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gcs
}

func (c *proc) lastLive() (int64, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.live, c.gcs
}

// resetPeak starts the peak live heap again from the last collection's.
func (c *proc) resetPeak() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.maxLive = c.live
}

func (c *proc) peakLive() (int64, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.maxLive, c.gcs
}

// settleGC lets two collections complete in each of ps (started with
// GCTrace), driven by scraping /metrics (every scrape is garbage to the
// child, nothing it keeps), so their last live heap is the current one.
func settleGC(ctx context.Context, ps ...*proc) error {
	gcs := make([]int, len(ps))
	names := make([]string, len(ps))
	for i, c := range ps {
		gcs[i], names[i] = c.gcCount(), c.name
	}
	settled := func() bool {
		for i, c := range ps {
			if c.gcCount() < gcs[i]+2 {
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(churnGCWait)
	for !settled() {
		if time.Now().After(deadline) {
			return fmt.Errorf("fewer than two collections in %s within %s", strings.Join(names, " and "), churnGCWait)
		}
		for _, c := range ps {
			if c.exited() {
				return fmt.Errorf("%s exited: %v", c.name, c.err)
			}
			_, _ = c.metrics()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// sampleEvery calls fn at once and then every `every`, in a goroutine of
// its own; the returned stop ends it and waits for it to end (it may be
// called more than once).
func sampleEvery(every time.Duration, fn func()) (stop func()) {
	done, quit := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			fn()
			select {
			case <-quit:
				return
			case <-t.C:
			}
		}
	}()
	return sync.OnceFunc(func() {
		close(quit)
		<-done
	})
}

// gcTrace matches a gctrace line (runtime package doc): "gc N @T s P%:
// ... ms cpu, START->END->LIVE MB, ...".
var gcTrace = regexp.MustCompile(`^gc \d+ @[0-9.]+s [0-9]+%: .* ([0-9]+)->([0-9]+)->([0-9]+) MB`)

// gcTraceWriter takes a child's stderr: gctrace lines update the child's
// collection count and live heap, every other line goes to rest.
type gcTraceWriter struct {
	c    *proc
	rest io.Writer
	buf  []byte
}

func (w *gcTraceWriter) Write(b []byte) (int, error) {
	w.buf = append(w.buf, b...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		line := w.buf[:i+1]
		if m := gcTrace.FindSubmatch(line); m != nil {
			mb, _ := strconv.ParseInt(string(m[3]), 10, 64)
			w.c.mu.Lock()
			w.c.gcs++
			w.c.live = mb << 20
			w.c.maxLive = max(w.c.maxLive, w.c.live)
			w.c.mu.Unlock()
		} else {
			_, _ = w.rest.Write(line)
		}
		w.buf = w.buf[i+1:]
	}
	return len(b), nil
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
