package main

// The churn phase (-churn, or -churn-only for nothing else): the router and
// one producer, each a process of its own (the `capstream` binary), on an
// embedded JetStream server and the real kube-apiserver, while the harness
// creates and deletes PacketCaptures, -churn-cycles of them (10000 by
// default), -churn-concurrency at a time. Each capture selects the one pod
// of a private namespace on the producer's node, and each cycle waits
// until the producer reported the capture started, deletes it, and waits
// until the producer reported it finished, so every cycle went through
// the whole command path. Stops expire after churnStopTTL and the producer
// resyncs every churnResync. The phase measures CAPSTREAM_COMMANDS and
// both processes' memory at the start, at their peak and once the stops
// expired, and says per figure whether it returned to its starting level.
//
// Heap: both children run with GODEBUG=gctrace=1; the live heap a
// collection marked (the third figure of each trace line, whole MiB) is
// the heap in use after a GC. To measure a level, the harness first lets
// two collections complete after the moment it measures, driving them by
// scraping /metrics (every scrape is garbage to the child, nothing it
// keeps), so the figure is the child's live heap at that moment, not a
// GC's from before the churn ended.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/capstream/capstream/schemas"
	"github.com/capstream/capstream/sink/sinktest"
)

const (
	// churnNode is the producer's node; the pod runs there.
	churnNode = "bench-churn-node"
	// churnStopTTL is router.stopTTL: whole seconds, at least 1s.
	churnStopTTL = 2 * time.Second
	// churnResync is producer.resyncPeriod: a capture finished by a stop
	// is dropped at the first resync after the stop expired.
	churnResync = time.Second
	// churnCycleWait bounds each wait for the producer's report of one
	// capture starting or finishing; a cycle that runs out is counted,
	// not fatal.
	churnCycleWait = time.Minute
	// churnSampleEvery is how often RSS, the goroutine and heap gauges
	// and the commands stream are sampled for the peaks.
	churnSampleEvery = 250 * time.Millisecond
	// churnGCWait bounds the wait for two collections in each child
	// before a level is read; the runtime forces one every 2 minutes
	// anyway.
	churnGCWait = 5 * time.Minute
	// churnRSSWait and churnRSSQuiet: the end level's RSS is the lowest
	// VmRSS sampled every second until none lower came for
	// churnRSSQuiet, at most churnRSSWait after the heap was read. The runtime hands
	// freed heap pages back to the kernel in the background, a little at
	// a time, so RSS read at the same instant as the heap still holds
	// the churn's peak.
	churnRSSWait = 2 * time.Minute
	// churnKeep is the capture that lives through the whole phase, so
	// the starting level is a producer and a router with work to do.
	churnKeep = "churn-keep"
)

// Tolerances of "returned to start". The commands stream is exact: once
// every stop expired it holds what it held before. A Go heap after a GC
// moves with what happens to be live at that instant (buffers in flight,
// timers, the trace's whole-MiB rounding): within 10% or 4 MiB. Goroutines
// come and go with connections and timers: within 5. RSS lags the heap,
// since the runtime returns freed pages to the kernel only gradually (the
// background scavenger): within 25% or 16 MiB.
const (
	churnHeapSlack    = 4 << 20
	churnHeapRatio    = 1.10
	churnRSSSlack     = 16 << 20
	churnRSSRatio     = 1.25
	churnGoroutineAdd = 5
)

// churnProc is one measured process's level.
type churnProc struct {
	// Live is the heap the last collection marked live, in bytes (whole
	// MiB, as gctrace prints it).
	Live int64
	// HeapInuse is go_memstats_heap_inuse_bytes (live and not yet
	// collected objects).
	HeapInuse int64
	// RSS is VmRSS (at a peak: VmHWM).
	RSS int64
	// Goroutines is go_goroutines.
	Goroutines float64
	// GCs is how many collections the process had run.
	GCs int
}

// churnLevel is one measurement of everything the phase follows.
type churnLevel struct {
	// Msgs and Bytes are CAPSTREAM_COMMANDS's state.
	Msgs, Bytes uint64
	// Router and Producer are the two processes.
	Router, Producer churnProc
	// At is when it was read, from the start of the phase.
	At time.Duration
}

// churnResult is what the churn phase measured.
type churnResult struct {
	// Skipped is set without -churn.
	Skipped bool
	// Cycles and Concurrency are the phase's size; Warmup is the cycles
	// run before the starting level, so that what every process
	// allocates once (caches, pools, connections) is not taken for
	// growth.
	Cycles, Concurrency, Warmup int
	StopTTL, Resync             time.Duration
	// Start, Peak and End are the levels; Peak holds each figure's
	// largest value over the churn.
	Start, Peak, End churnLevel
	// Churn is the time of the Cycles cycles; Settle runs from the last
	// cycle to the end level (stops expiring, resync, two collections);
	// Wall is the whole phase, the build included.
	Churn, Settle, Wall, Build time.Duration
	// RouterRSSAtHeap and ProducerRSSAtHeap are VmRSS when the end
	// level's heap was read; End's RSS is the low reached RSSSettle
	// later (churnRSSQuiet).
	RouterRSSAtHeap, ProducerRSSAtHeap int64
	RSSSettle                          time.Duration
	// Drained is false when the commands stream did not return to its
	// starting count within churnStopTTL plus -timeout; StartDrained the
	// same for the warm-up's stops before the starting level.
	Drained, StartDrained bool
	// StartMissed and StopMissed count cycles whose start or finish the
	// producer did not report within churnCycleWait.
	StartMissed, StopMissed int
	// StartLatency and StopLatency are, over the cycles, the times from
	// creating a capture to the producer's report that it started, and
	// from deleting it to the report that it finished.
	StartLatency, StopLatency latencies
	// ProducerCommands is the producer's commands_total by result,
	// RouterPublished the router's commands_published_total by action,
	// ProducerCaptures its captures gauge, all at the end.
	ProducerCommands, RouterPublished map[string]float64
	ProducerCaptures                  float64
	// RouterExit and ProducerExit say how each ended after SIGTERM (""
	// for a clean exit).
	RouterExit, ProducerExit string
	Problems                 []string
}

// churnRSSQuiet: see churnRSSWait. The test, which asserts no RSS,
// shortens it.
var churnRSSQuiet = 10 * time.Second

// churnEnv is what a run of the phase shares.
type churnEnv struct {
	kubeClients
	o        options
	ns       string
	js       jetstream.JetStream
	router   *proc
	producer *proc
	t0       time.Time

	mu      sync.Mutex
	waiters map[string]*churnWaiter
	peak    churnLevel
}

// churnWaiter is one capture's reports from the producer.
type churnWaiter struct {
	started, finished         chan struct{}
	startedOnce, finishedOnce sync.Once
}

// runChurn runs the phase in dir.
func runChurn(ctx context.Context, o options, dir string) (*churnResult, error) {
	r := &churnResult{Cycles: o.ChurnCycles, Concurrency: o.ChurnConcurrency, StopTTL: churnStopTTL, Resync: churnResync,
		Warmup: min(max(o.ChurnCycles/20, 10), 100)}
	t0 := time.Now()
	bin := filepath.Join(dir, "capstream")
	if _, err := os.Stat(bin); err != nil {
		if err := buildBinary(ctx, bin); err != nil {
			return r, err
		}
		r.Build = time.Since(t0)
	}
	pcap := filepath.Join(dir, "churn.pcap")
	// Four datagrams 250 ms apart, replayed at that pace in a loop: every
	// capture runs (and publishes a little) until its stop.
	g := sinktest.NewGen(time.Now().Truncate(time.Second), 250*time.Millisecond)
	for i := range 4 {
		g.UDP(net.IPv4(10, 66, 0, 2), net.IPv4(10, 66, 0, 1), uint16(40000+i), 9000, []byte("churn"))
	}
	if err := sinktest.WritePcap(pcap, g.Pkts); err != nil {
		return r, err
	}

	e := &churnEnv{o: o, waiters: map[string]*churnWaiter{}, t0: t0}
	cleanup, err := e.setupKube(ctx)
	if err != nil {
		return r, err
	}
	defer cleanup()

	bus, err := startPhaseBus(dir, "churn")
	if err != nil {
		return r, err
	}
	defer bus.close()
	nc := bus.nc
	e.js = bus.js
	if err := schemas.EnsureStreams(ctx, e.js, schemas.DefaultPacketsStreamLimits()); err != nil {
		return r, err
	}
	sub, err := nc.Subscribe(schemas.StatusSubjectsAll, e.onStatus)
	if err != nil {
		return r, err
	}
	defer func() { _ = sub.Unsubscribe() }()

	if e.router, err = startChurnChild(ctx, o, dir, bin, "router", e.routerConfig(bus.URL)); err != nil {
		return r, err
	}
	defer func() { r.RouterExit = e.router.stop() }()
	if e.producer, err = startChurnChild(ctx, o, dir, bin, "producer", e.producerConfig(bus.URL, pcap)); err != nil {
		return r, err
	}
	defer func() { r.ProducerExit = e.producer.stop() }()
	for _, c := range []*proc{e.router, e.producer} {
		if err := c.waitReady(ctx, o.Timeout); err != nil {
			return r, err
		}
	}
	defer sampleEvery(churnSampleEvery, func() { e.sample(ctx) })()

	// The kept capture, then the warm-up; the starting level once the
	// warm-up's stops expired.
	keep := e.waiter(churnKeep)
	if err := e.createCapture(ctx, churnKeep); err != nil {
		return r, err
	}
	if !e.wait(ctx, keep.started) {
		return r, fmt.Errorf("capture %s: the producer did not report it started within %s", churnKeep, churnCycleWait)
	}
	if _, _, _, err := e.cycles(ctx, "churn-warmup", r.Warmup, o.ChurnConcurrency); err != nil {
		return r, fmt.Errorf("warm-up: %w", err)
	}
	if r.Start, r.StartDrained, err = e.level(ctx, 1); err != nil {
		return r, fmt.Errorf("start level: %w", err)
	}
	e.mu.Lock()
	e.peak = r.Start
	e.mu.Unlock()
	e.router.resetPeak()
	e.producer.resetPeak()

	fmt.Fprintf(o.Log, "bench: churn phase, %d cycles, %d at a time\n", r.Cycles, r.Concurrency)
	tc := time.Now()
	var lat [2]latencies
	if r.StartMissed, r.StopMissed, lat, err = e.cycles(ctx, "churn", r.Cycles, o.ChurnConcurrency); err != nil {
		return r, err
	}
	r.StartLatency, r.StopLatency = lat[0], lat[1]
	r.Churn = time.Since(tc)
	ts := time.Now()
	if r.End, r.Drained, err = e.level(ctx, r.Start.Msgs); err != nil {
		return r, fmt.Errorf("end level: %w", err)
	}
	r.Settle = time.Since(ts)
	r.RouterRSSAtHeap, r.ProducerRSSAtHeap = r.End.Router.RSS, r.End.Producer.RSS
	tr := time.Now()
	if err := e.settleRSS(ctx, &r.End); err != nil {
		return r, fmt.Errorf("end level: %w", err)
	}
	r.RSSSettle = time.Since(tr)
	e.mu.Lock()
	r.Peak = e.peak
	e.mu.Unlock()
	// VmHWM is the exact peak resident set; the samples only approach it.
	for _, p := range []struct {
		c  *proc
		to *churnProc
	}{{e.router, &r.Peak.Router}, {e.producer, &r.Peak.Producer}} {
		if _, hwm, err := procMem(p.c.pid()); err == nil {
			p.to.RSS = max(p.to.RSS, hwm)
		}
	}
	r.ProducerCommands, _ = e.producer.scrapeVec("capstream_producer_commands_total", "result")
	r.RouterPublished, _ = e.router.scrapeVec("capstream_router_commands_published_total", "action")
	r.ProducerCaptures, _ = e.producer.scrape("capstream_producer_captures")
	r.RouterExit, r.ProducerExit = e.router.stop(), e.producer.stop()
	r.Wall = time.Since(t0)
	r.Problems = r.check()
	return r, nil
}

// setupKube installs the CRD and makes a private namespace with one
// running pod on churnNode; the returned cleanup deletes the namespace
// (and every capture left in it).
func (e *churnEnv) setupKube(ctx context.Context) (func(), error) {
	var err error
	if e.kubeClients, err = connectKube(ctx, 200, 400); err != nil {
		return nil, err
	}
	id := make([]byte, 4)
	_, _ = rand.Read(id)
	e.ns = "bench-churn-" + hex.EncodeToString(id)
	if err := e.createNamespace(ctx, e.ns, nil); err != nil {
		return nil, err
	}
	cleanup := func() {
		cctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		if err := e.kube.CoreV1().Namespaces().Delete(cctx, e.ns, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			fmt.Fprintf(e.o.Log, "bench: delete namespace %s: %v\n", e.ns, err)
		}
	}
	pods := e.kube.CoreV1().Pods(e.ns)
	pod, err := pods.Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "churn-pod", Namespace: e.ns, Labels: map[string]string{"app": "churn"}},
		Spec: corev1.PodSpec{NodeName: churnNode, ServiceAccountName: "default",
			Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}}},
	}, metav1.CreateOptions{})
	if err == nil {
		pod.Status.Phase = corev1.PodRunning
		_, err = pods.UpdateStatus(ctx, pod, metav1.UpdateOptions{})
	}
	if err != nil {
		cleanup()
		return nil, fmt.Errorf("pod in %s: %w", e.ns, err)
	}
	return cleanup, nil
}

// startChurnChild starts `capstream <name>` on cfg with GODEBUG=gctrace=1,
// without the harness's component overrides and GC settings, which would
// change what is measured.
func startChurnChild(ctx context.Context, o options, dir, bin, name, cfg string) (*proc, error) {
	return startProc(ctx, o.Log, dir, bin, procSpec{Args: []string{name}, Name: name, Config: cfg, File: "churn-" + name + ".yaml",
		GCTrace: true, Drop: []string{"CAPSTREAM_ROUTER_", "CAPSTREAM_PRODUCER_", "GODEBUG=", "GOGC=", "GOMEMLIMIT="}})
}

// routerConfig is the router's: the connections, the private namespace,
// no election (it runs alone) and churnStopTTL; every other setting is the
// default.
func (e *churnEnv) routerConfig(natsURL string) string {
	return e.routerYAML(natsURL, e.ns, "", fmt.Sprintf("  stopTTL: %s\n", churnStopTTL))
}

// producerConfig is the producer's: the connections, the file source
// replaying pcap in a loop at its pace on every interface, and
// churnResync.
func (e *churnEnv) producerConfig(natsURL, pcap string) string {
	return fmt.Sprintf("node: %s\n", churnNode) + natsYAML(natsURL, "capstream-producer") + fmt.Sprintf(`producer:
  source: file
  file:
    default: %q
    paced: true
    loop: true
  resyncPeriod: %s
`, pcap, churnResync)
}
