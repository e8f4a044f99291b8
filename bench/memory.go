package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/capstream/capstream/schemas"
	"github.com/capstream/capstream/sink"
	"github.com/capstream/capstream/sink/sinktest"
)

// The memory phase runs each sink as its own process (the `capstream`
// binary, built once) so that its peak RSS is its own and not the embedded
// nats-server's or the harness's. Everything is published before the sinks
// start, so they meet the whole input at once, as after an outage.
const (
	// memoryTarget is the acceptance point: each sink's memory under 256
	// MiB whatever the input.
	memoryTarget = 256 << 20
	// rssEvery is how often each child's VmRSS is sampled. VmHWM, read at
	// the end, is the kernel's exact peak; the samples only show the
	// shape and cross-check it.
	rssEvery = 50 * time.Millisecond
	// gaugeEvery is how often each child's open objects/flows gauge is
	// scraped, to show that the hostile input really held them open.
	gaugeEvery = 250 * time.Millisecond
	// hostileFlowsMax and hostileIfacesMax are the hostile input at the
	// default -packets: more distinct flows than the flow sink's default
	// maxFlows (65536) and thousands of interfaces open at once in the
	// pcap sink.
	hostileFlowsMax  = 300000
	hostileIfacesMax = 2000
	// hostileRounds is how many batches each hostile interface sends.
	// They are published round by round over all interfaces, so every
	// interface's object is open from the first round to the last.
	hostileRounds = 3
	// memoryProducer names the batches the harness publishes.
	memoryProducer = "bench-memory"
	// exitTimeout bounds a sink's exit after SIGTERM: more than both
	// sinks' default grace periods.
	exitTimeout = time.Minute
)

// Input names of the memory phase.
const (
	memInputThroughput = "throughput"
	memInputHostile    = "hostile"
)

// sinkMemory is one sink process's memory over one input.
type sinkMemory struct {
	// Sink is "pcap" or "flows".
	Sink string
	// PeakRSS is VmHWM, the peak resident set, in bytes, read once the
	// input was stored, before SIGTERM.
	PeakRSS int64
	// MaxSampledRSS is the largest VmRSS sampled every rssEvery, to the
	// end of the process (shutdown included).
	MaxSampledRSS int64
	// Samples is how many VmRSS samples were read.
	Samples int
	// PeakGauge is the largest value scraped of the sink's open-state
	// gauge: open objects (pcap) or open flows (flows).
	PeakGauge float64
	// PeakHeap is the largest go_memstats_heap_inuse_bytes scraped: the
	// Go heap in use, against which the RSS shows the collector's slack.
	PeakHeap int64
	// Exit is how the process ended after SIGTERM ("" for a clean exit).
	Exit string
}

// memoryRun is one input through both sink processes.
type memoryRun struct {
	Input string
	// Packets, Batches, Bytes (batch bodies) and Interfaces describe what
	// was published; Flows is distinct flows (hostile) or flows started
	// (throughput).
	Packets, Batches, Interfaces, Flows int
	Bytes                               int64
	// Publish is how long publishing took; Wall runs from starting the
	// sinks until both had acked everything and the data was queryable.
	Publish, Wall time.Duration
	// PcapSink and FlowSink are the two sinks.
	PcapSink, FlowSink sinkMemory
	// storedCounts is what ClickHouse holds for the input's capture.
	storedCounts
	// LongNames is how many flow records hold all three long L7 names
	// (each of the hostile input's flows carries them).
	LongNames int
}

// memoryResult is what the memory phase measured.
type memoryResult struct {
	// Skipped is set by -memory=false.
	Skipped bool
	// Build is the time `go build` took; Wall is the whole phase, build
	// included.
	Build, Wall time.Duration
	// StopAfter is the sinks' stopAfter when the harness overrode it
	// (tests), 0 for the defaults.
	StopAfter time.Duration
	Runs      []memoryRun
}

// worst returns the highest peak RSS of each sink over the inputs.
func (m memoryResult) worst() (pcap, flows int64) {
	for _, r := range m.Runs {
		pcap, flows = max(pcap, r.PcapSink.PeakRSS), max(flows, r.FlowSink.PeakRSS)
	}
	return pcap, flows
}

// check returns every way the stored data or the processes disagree with
// the inputs.
func (m memoryResult) check(w workload) []string {
	var probs []string
	for _, r := range m.Runs {
		if r.ObjectPackets != uint64(r.Packets) {
			probs = append(probs, fmt.Sprintf("memory %s: pcap_objects hold %d packets, the input %d", r.Input, r.ObjectPackets, r.Packets))
		}
		if r.FlowPackets != uint64(r.Packets) {
			probs = append(probs, fmt.Sprintf("memory %s: flows count %d packets, the input %d", r.Input, r.FlowPackets, r.Packets))
		}
		if r.Input == memInputHostile && r.LongNames != r.Flows {
			probs = append(probs, fmt.Sprintf("memory %s: %d flow records hold their three long L7 names, want %d", r.Input, r.LongNames, r.Flows))
		}
		if r.Input == memInputThroughput {
			if want := uint64(w.FileBytes-24) + 24*uint64(r.Objects); r.ObjectBytes != want {
				probs = append(probs, fmt.Sprintf("memory %s: objects hold %d bytes, want %d", r.Input, r.ObjectBytes, want))
			}
		}
		for _, s := range []sinkMemory{r.PcapSink, r.FlowSink} {
			if s.Exit != "" {
				probs = append(probs, fmt.Sprintf("memory %s: sink %s did not exit cleanly on SIGTERM: %s", r.Input, s.Sink, s.Exit))
			}
			if s.PeakRSS <= 0 || s.Samples == 0 {
				probs = append(probs, fmt.Sprintf("memory %s: sink %s: no RSS read (VmHWM %d, %d samples)", r.Input, s.Sink, s.PeakRSS, s.Samples))
			}
		}
	}
	return probs
}

// runMemory builds the binary, starts a JetStream server of its own and,
// for each input, publishes it, runs both sinks as child processes until
// everything is stored, and reads their peak RSS.
func runMemory(ctx context.Context, o options, dir string, st storage, w workload) (memoryResult, error) {
	res := memoryResult{StopAfter: o.MemoryStopAfter}
	t0 := time.Now()
	bin := filepath.Join(dir, "capstream")
	if err := buildBinary(ctx, bin); err != nil {
		return res, err
	}
	res.Build = time.Since(t0)

	bus, err := startPhaseBus(dir, "memory", jetstream.WithPublishAsyncMaxPending(256))
	if err != nil {
		return res, err
	}
	defer bus.close()
	js := bus.js
	limits := schemas.DefaultPacketsStreamLimits()
	// The whole input waits in the stream before the sinks start.
	limits.MaxBytes = max(limits.MaxBytes, 2*w.FileBytes)
	if err := schemas.EnsureStreams(ctx, js, limits); err != nil {
		return res, err
	}
	// The durables exist before the first batch (interest retention), as
	// the sinks would leave them after a restart.
	for _, cc := range []jetstream.ConsumerConfig{schemas.PcapSinkConsumer(), schemas.FlowSinkConsumer()} {
		if _, err := sink.Bind(ctx, js, cc, 0); err != nil {
			return res, err
		}
	}
	ch, err := st.ch.Open()
	if err != nil {
		return res, err
	}
	defer ch.Close()

	env := memEnv{o: o, dir: dir, bin: bin, natsURL: bus.URL, st: st, js: js, ch: ch}
	inputs := []struct {
		name    string
		publish func(context.Context, *memoryRun) error
	}{
		{memInputThroughput, func(ctx context.Context, r *memoryRun) error { return env.publishWorkload(ctx, r, w) }},
		{memInputHostile, func(ctx context.Context, r *memoryRun) error { return env.publishHostile(ctx, r, o.Packets) }},
	}
	for _, in := range inputs {
		fmt.Fprintf(o.Log, "bench: memory phase, %s input\n", in.name)
		r := memoryRun{Input: in.name}
		tp := time.Now()
		if err := in.publish(ctx, &r); err != nil {
			return res, fmt.Errorf("memory %s: publish: %w", in.name, err)
		}
		r.Publish = time.Since(tp)
		if err := env.runSinks(ctx, &r); err != nil {
			return res, fmt.Errorf("memory %s: %w", in.name, err)
		}
		res.Runs = append(res.Runs, r)
	}
	res.Wall = time.Since(t0)
	return res, nil
}

// buildBinary builds ./cmd/capstream of this module into bin with the go
// on PATH. The module root is asked of go itself: `go run ./bench` runs
// in it, `go test ./bench` in bench/.
func buildBinary(ctx context.Context, bin string) error {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return errors.New("go env GOMOD: not in a module")
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/capstream")
	cmd.Dir = filepath.Dir(gomod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/capstream: %w\n%s", err, out)
	}
	return nil
}

// memEnv is what every input of the memory phase shares.
type memEnv struct {
	o       options
	dir     string
	bin     string
	natsURL string
	st      storage
	js      jetstream.JetStream
	ch      driver.Conn
}

func memCapture(input string) string { return "memory-" + input }

// publisher publishes batches asynchronously and checks every ack.
type publisher struct {
	js      jetstream.JetStream
	futures []jetstream.PubAckFuture
	r       *memoryRun
}

func (p *publisher) publish(h schemas.BatchHeader, body []byte) error {
	b := sinktest.Batch{Header: h, Body: body}
	// A slow disk can hold acks back for a while: wait for room rather
	// than failing the run after the client's default 200ms.
	f, err := p.js.PublishMsgAsync(b.Msg(), jetstream.WithStallWait(time.Minute))
	if err != nil {
		return fmt.Errorf("publish batch %s/%d: %w", h.Interface, h.Seq, err)
	}
	p.futures = append(p.futures, f)
	p.r.Batches++
	p.r.Bytes += int64(len(body))
	p.r.Packets += int(h.Packets)
	return nil
}

func (p *publisher) wait(ctx context.Context, timeout time.Duration) error {
	select {
	case <-p.js.PublishAsyncComplete():
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(timeout):
		return fmt.Errorf("publishes not acked within %s", timeout)
	}
	for _, f := range p.futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("publish batch: %w", err)
		}
	}
	return nil
}

// publishWorkload publishes the throughput workload as the producer would
// replay it on one interface: 512 KiB batches, the last one marked Last.
func (e *memEnv) publishWorkload(ctx context.Context, r *memoryRun, w workload) error {
	name := memCapture(memInputThroughput)
	h := sinktest.Header(benchNamespace, name, "uid-"+name, benchNode, benchPod, throughputIf)
	h.Producer = memoryProducer
	p := &publisher{js: e.js, r: r}
	r.Interfaces, r.Flows = 1, w.Flows
	if err := eachBatch(w.Path, h, p.publish); err != nil {
		return err
	}
	return p.wait(ctx, e.o.Timeout)
}

// runSinks starts both sinks on what was published, samples them until
// everything is acked and stored, reads their peak RSS and stops them.
func (e *memEnv) runSinks(ctx context.Context, r *memoryRun) error {
	r.PcapSink.Sink, r.FlowSink.Sink = "pcap", "flows"
	t0 := time.Now()
	var children []*child
	stopAll := func() {
		for _, c := range children {
			c.stop()
		}
	}
	for _, m := range []*sinkMemory{&r.PcapSink, &r.FlowSink} {
		c, err := e.startSink(ctx, m.Sink, m)
		if err != nil {
			stopAll()
			return err
		}
		children = append(children, c)
	}
	every, i := int(gaugeEvery/rssEvery), 0
	stopSampler := sampleEvery(rssEvery, func() {
		for _, c := range children {
			c.sample()
			if i%every == 0 {
				c.scrape()
			}
		}
		i++
	})
	err := e.waitStored(ctx, r, children)
	if err == nil {
		r.Wall = time.Since(t0)
		for _, c := range children {
			if _, hwm, perr := procMem(c.pid()); perr != nil {
				err = errors.Join(err, fmt.Errorf("sink %s: %w", c.mem.Sink, perr))
			} else {
				c.mem.PeakRSS = hwm
			}
		}
	}
	// Shutdown is sampled too (MaxSampledRSS), until the exit.
	stopAll()
	stopSampler()
	return err
}

// waitStored waits until both durables have no pending and no unacked
// batch and the input's packets are all in pcap_objects and flows.
func (e *memEnv) waitStored(ctx context.Context, r *memoryRun, children []*child) error {
	capture := memCapture(r.Input)
	deadline := time.Now().Add(e.o.Timeout)
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	var drainedAt time.Time
	for {
		drained, err := e.stored(ctx, r, capture)
		if err == nil {
			return nil
		}
		// A sink acks a batch only once it is stored, so drained means
		// stored; a count still short a little later is a loss, which
		// check reports, not a reason to wait on.
		if drained && drainedAt.IsZero() {
			drainedAt = time.Now()
		}
		if drained && time.Since(drainedAt) > 5*time.Second {
			return nil
		}
		for _, c := range children {
			if c.exited() {
				return fmt.Errorf("sink %s exited early: %v", c.mem.Sink, c.err)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not stored within %s: %w", e.o.Timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// stored reports whether both durables are drained, and an error unless
// the input's packets are all queryable too.
func (e *memEnv) stored(ctx context.Context, r *memoryRun, capture string) (bool, error) {
	for _, name := range []string{schemas.ConsumerPcapSink, schemas.ConsumerFlowSink} {
		if err := sink.Drained(ctx, e.js, name, false); err != nil {
			return false, err
		}
	}
	var err error
	if r.storedCounts, err = queryStored(ctx, e.ch, capture); err != nil {
		return false, err
	}
	q := fmt.Sprintf("SELECT count() FROM flows FINAL WHERE namespace = '%s' AND capture = '%s' AND length(dns_query) = %d AND length(tls_sni) = %d AND length(http_host) = %d", benchNamespace, capture, hostileName, hostileName, hostileName)
	var long uint64
	if err := e.ch.QueryRow(ctx, q).Scan(&long); err != nil {
		return false, fmt.Errorf("query flows: %w", err)
	}
	r.LongNames = int(long)
	if r.ObjectPackets != uint64(r.Packets) || r.FlowPackets != uint64(r.Packets) {
		return true, fmt.Errorf("stored %d packets in objects, %d in flows, want %d", r.ObjectPackets, r.FlowPackets, r.Packets)
	}
	return true, nil
}
