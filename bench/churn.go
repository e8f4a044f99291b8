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
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
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

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/schemas"
	v3 "github.com/capstream/capstream/schemas/v3"
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
	o        options
	ns       string
	kube     kubernetes.Interface
	dyn      dynamic.Interface
	js       jetstream.JetStream
	router   *churnChild
	producer *churnChild
	t0       time.Time
	// kubeconfig is the file the router is given.
	kubeconfig string

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
	for _, c := range []*churnChild{e.router, e.producer} {
		if err := c.waitReady(ctx, o.Timeout); err != nil {
			return r, err
		}
	}
	samplerDone, stopSampler := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(samplerDone)
		t := time.NewTicker(churnSampleEvery)
		defer t.Stop()
		for {
			e.sample(ctx)
			select {
			case <-stopSampler:
				return
			case <-t.C:
			}
		}
	}()
	defer func() {
		close(stopSampler)
		<-samplerDone
	}()

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
		c  *churnChild
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
	path := testenv.Getenv(testenv.EnvKubeconfig)
	if path == "" {
		return nil, errors.New(testenv.EnvKubeconfig + " is not set (is deploy/dev/deps.sh up?)")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig %s: %w", path, err)
	}
	cfg.QPS, cfg.Burst = 200, 400
	if e.kube, err = kubernetes.NewForConfig(cfg); err != nil {
		return nil, err
	}
	if e.dyn, err = dynamic.NewForConfig(cfg); err != nil {
		return nil, err
	}
	ext, err := apiextensionsclient.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	e.kubeconfig = path
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := testenv.InstallCRD(cctx, ext); err != nil {
		return nil, err
	}
	id := make([]byte, 4)
	_, _ = rand.Read(id)
	e.ns = "bench-churn-" + hex.EncodeToString(id)
	if _, err := e.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: e.ns}}, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("create namespace %s: %w", e.ns, err)
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

// routerConfig is the router's: the connections, the private namespace,
// no election (it runs alone) and churnStopTTL; every other setting is the
// default.
func (e *churnEnv) routerConfig(natsURL string) string {
	return fmt.Sprintf(`kube:
  kubeconfig: %q
nats:
  url: %s
  name: capstream-router
  plaintext: true
  anonymous: true
router:
  namespace: %s
  stopTTL: %s
  leaderElection:
    enabled: false
`, e.kubeconfig, natsURL, e.ns, churnStopTTL)
}

// producerConfig is the producer's: the connections, the file source
// replaying pcap in a loop at its pace on every interface, and
// churnResync.
func (e *churnEnv) producerConfig(natsURL, pcap string) string {
	return fmt.Sprintf(`node: %s
nats:
  url: %s
  name: capstream-producer
  plaintext: true
  anonymous: true
producer:
  source: file
  file:
    default: %q
    paced: true
    loop: true
  resyncPeriod: %s
`, churnNode, natsURL, pcap, churnResync)
}

// onStatus hands the producer's reports to the cycles waiting for them.
func (e *churnEnv) onStatus(m *nats.Msg) {
	s, err := schemas.DecodeStatus(m.Data)
	if err != nil || s.Source != schemas.SourceProducer || s.Namespace != e.ns {
		return
	}
	e.mu.Lock()
	w := e.waiters[s.Name]
	e.mu.Unlock()
	if w == nil {
		return
	}
	switch s.State {
	case schemas.StateFinished:
		w.startedOnce.Do(func() { close(w.started) })
		w.finishedOnce.Do(func() { close(w.finished) })
	case schemas.StateWaitingForTraffic, schemas.StateCapturing, schemas.StateScheduled:
		w.startedOnce.Do(func() { close(w.started) })
	}
}

func (e *churnEnv) waiter(name string) *churnWaiter {
	w := &churnWaiter{started: make(chan struct{}), finished: make(chan struct{})}
	e.mu.Lock()
	e.waiters[name] = w
	e.mu.Unlock()
	return w
}

// wait reports whether ch closed within churnCycleWait.
func (e *churnEnv) wait(ctx context.Context, ch <-chan struct{}) bool {
	t := time.NewTimer(churnCycleWait)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

func (e *churnEnv) createCapture(ctx context.Context, name string) error {
	pc := &v3.PacketCapture{
		TypeMeta:   metav1.TypeMeta{APIVersion: v3.SchemeGroupVersion.String(), Kind: v3.Kind},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: e.ns},
		Spec:       v3.PacketCaptureSpec{Selector: "app == 'churn'"},
	}
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(pc)
	if err != nil {
		return err
	}
	if _, err := e.dyn.Resource(v3.Resource).Namespace(e.ns).Create(ctx, &unstructured.Unstructured{Object: u}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create capture %s/%s: %w", e.ns, name, err)
	}
	return nil
}

// cycles creates and deletes n captures named prefix-<i>, at most
// concurrency at a time, and returns how many the producer was not seen
// to start and to finish.
func (e *churnEnv) cycles(ctx context.Context, prefix string, n, concurrency int) (startMissed, stopMissed int, lat [2]latencies, err error) {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(concurrency)
	var mu sync.Mutex
	var starts, stops []time.Duration
	begin := time.Now()
	for i := range n {
		if gctx.Err() != nil {
			break
		}
		name := fmt.Sprintf("%s-%05d", prefix, i)
		g.Go(func() error {
			w := e.waiter(name)
			defer func() {
				e.mu.Lock()
				delete(e.waiters, name)
				e.mu.Unlock()
			}()
			t0 := time.Now()
			if err := e.createCapture(gctx, name); err != nil {
				return err
			}
			started := e.wait(gctx, w.started)
			t1 := time.Now()
			if err := e.dyn.Resource(v3.Resource).Namespace(e.ns).Delete(gctx, name, metav1.DeleteOptions{}); err != nil {
				return fmt.Errorf("delete capture %s/%s: %w", e.ns, name, err)
			}
			finished := e.wait(gctx, w.finished)
			t2 := time.Now()
			if gctx.Err() != nil {
				return gctx.Err()
			}
			mu.Lock()
			defer mu.Unlock()
			if started {
				starts = append(starts, t1.Sub(t0))
			} else {
				startMissed++
			}
			if finished {
				stops = append(stops, t2.Sub(t1))
			} else {
				stopMissed++
			}
			if done := len(starts) + startMissed; done%1000 == 0 {
				fmt.Fprintf(e.o.Log, "bench: churn: %d of %d cycles, %.1f/s\n", done, n, float64(done)/time.Since(begin).Seconds())
			}
			return nil
		})
	}
	err = g.Wait()
	return startMissed, stopMissed, [2]latencies{newLatencies(starts), newLatencies(stops)}, err
}

// latencies summarises durations.
type latencies struct {
	P50, P99, Max time.Duration
}

func newLatencies(d []time.Duration) latencies {
	if len(d) == 0 {
		return latencies{}
	}
	slices.Sort(d)
	return latencies{P50: d[len(d)/2], P99: d[len(d)*99/100], Max: d[len(d)-1]}
}

func (l latencies) String() string {
	return fmt.Sprintf("p50 %s, p99 %s, max %s", l.P50.Round(time.Millisecond), l.P99.Round(time.Millisecond), l.Max.Round(time.Millisecond))
}

// level waits until CAPSTREAM_COMMANDS holds at most want messages
// (bounded by churnStopTTL plus -timeout; drained says whether it got
// there), then for a producer resync, then for two collections in each
// child, and reads every figure.
func (e *churnEnv) level(ctx context.Context, want uint64) (l churnLevel, drained bool, err error) {
	deadline := time.Now().Add(churnStopTTL + e.o.Timeout)
	for {
		msgs, _, err := e.commands(ctx)
		if err != nil {
			return l, false, err
		}
		if msgs <= want {
			drained = true
			break
		}
		if time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return l, false, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	// A resync after the last expiry drops the producer's finished
	// captures; the router forgets a stop within a second of its expiry.
	select {
	case <-ctx.Done():
		return l, false, ctx.Err()
	case <-time.After(churnResync + time.Second):
	}
	gcs := []int{e.router.gcCount(), e.producer.gcCount()}
	gcDeadline := time.Now().Add(churnGCWait)
	for i := 0; e.router.gcCount() < gcs[0]+2 || e.producer.gcCount() < gcs[1]+2; i++ {
		if time.Now().After(gcDeadline) {
			return l, drained, fmt.Errorf("fewer than two collections in each child within %s", churnGCWait)
		}
		for _, c := range []*churnChild{e.router, e.producer} {
			if c.exited() {
				return l, drained, fmt.Errorf("%s exited: %v", c.name, c.err)
			}
			_, _ = c.metrics()
		}
		select {
		case <-ctx.Done():
			return l, false, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	if l.Msgs, l.Bytes, err = e.commands(ctx); err != nil {
		return l, drained, err
	}
	for _, p := range []struct {
		c  *churnChild
		to *churnProc
	}{{e.router, &l.Router}, {e.producer, &l.Producer}} {
		p.to.Live, p.to.GCs = p.c.lastLive()
		p.to.HeapInuse, p.to.Goroutines, p.to.RSS = p.c.memory()
	}
	l.At = time.Since(e.t0)
	return l, drained, nil
}

// settleRSS lowers l's RSS figures to the lowest VmRSS sampled every
// second, until neither child made a new low for churnRSSQuiet or
// churnRSSWait passed.
func (e *churnEnv) settleRSS(ctx context.Context, l *churnLevel) error {
	deadline, lastLow := time.Now().Add(churnRSSWait), time.Now()
	for time.Since(lastLow) < churnRSSQuiet && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
		for _, p := range []struct {
			c  *churnChild
			to *churnProc
		}{{e.router, &l.Router}, {e.producer, &l.Producer}} {
			rss, _, err := procMem(p.c.pid())
			if err != nil {
				return fmt.Errorf("%s: %w", p.c.name, err)
			}
			if rss < p.to.RSS {
				p.to.RSS, lastLow = rss, time.Now()
			}
		}
	}
	return nil
}

// commands returns CAPSTREAM_COMMANDS's messages and bytes.
func (e *churnEnv) commands(ctx context.Context) (msgs, bytes uint64, err error) {
	s, err := e.js.Stream(ctx, schemas.StreamCommands)
	if err != nil {
		return 0, 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, 0, err
	}
	return info.State.Msgs, info.State.Bytes, nil
}

// sample folds the current figures into the peaks.
func (e *churnEnv) sample(ctx context.Context) {
	msgs, bytes, err := e.commands(ctx)
	var procs [2]churnProc
	for i, c := range []*churnChild{e.router, e.producer} {
		procs[i].Live, _ = c.peakLive()
		procs[i].HeapInuse, procs[i].Goroutines, procs[i].RSS = c.memory()
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if err == nil {
		e.peak.Msgs, e.peak.Bytes = max(e.peak.Msgs, msgs), max(e.peak.Bytes, bytes)
	}
	for i, to := range []*churnProc{&e.peak.Router, &e.peak.Producer} {
		to.Live = max(to.Live, procs[i].Live)
		to.HeapInuse = max(to.HeapInuse, procs[i].HeapInuse)
		to.Goroutines = max(to.Goroutines, procs[i].Goroutines)
		to.RSS = max(to.RSS, procs[i].RSS)
	}
}

// check returns every way the phase went wrong: the stream not back at
// its start, cycles the producer did not report, unclean exits. Memory
// that did not return is reported, not a failure of the run.
func (r *churnResult) check() []string {
	var probs []string
	if !r.StartDrained {
		probs = append(probs, fmt.Sprintf("churn: CAPSTREAM_COMMANDS holds %d messages once the warm-up's stops should have expired, want 1 (the kept capture's)", r.Start.Msgs))
	}
	if !r.Drained || r.End.Msgs != r.Start.Msgs || r.End.Bytes != r.Start.Bytes {
		probs = append(probs, fmt.Sprintf("churn: CAPSTREAM_COMMANDS holds %d messages (%d bytes) after the stops expired, %d (%d bytes) at the start",
			r.End.Msgs, r.End.Bytes, r.Start.Msgs, r.Start.Bytes))
	}
	if r.StartMissed > 0 || r.StopMissed > 0 {
		probs = append(probs, fmt.Sprintf("churn: the producer did not report %d of %d captures started and %d finished within %s",
			r.StartMissed, r.Cycles, r.StopMissed, churnCycleWait))
	}
	if r.RouterExit != "" || r.ProducerExit != "" {
		probs = append(probs, fmt.Sprintf("churn: unclean exit on SIGTERM: router %q, producer %q", r.RouterExit, r.ProducerExit))
	}
	return probs
}

// returned says whether end is back at start: within ratio of it or slack
// above it.
func returned(start, end, ratio, slack float64) bool {
	return end <= start*ratio || end-start <= slack
}

// report is the phase's lines of the bench report.
func (r *churnResult) report() string {
	if r == nil || r.Skipped {
		return "churn: skipped (-churn=false)\n"
	}
	const mib = 1 << 20
	var sb strings.Builder
	fmt.Fprintf(&sb, "churn (router and producer as processes of their own on the real kube-apiserver and an embedded JetStream server; %d PacketCaptures created and deleted, %d at a time, each waited for until the producer reported it started and finished; stopTTL %s, producer resyncPeriod %s; starting level after %d warm-up cycles):\n",
		r.Cycles, r.Concurrency, r.StopTTL, r.Resync, r.Warmup)
	fmt.Fprintf(&sb, "  %d cycles in %s = %.1f cycles/s; end level %s after the last cycle; phase %s (build %s)\n",
		r.Cycles, r.Churn.Round(time.Millisecond), float64(r.Cycles)/r.Churn.Seconds(), r.Settle.Round(time.Millisecond),
		r.Wall.Round(time.Millisecond), r.Build.Round(time.Millisecond))
	fmt.Fprintf(&sb, "  create -> producer reports started: %s; delete -> producer reports finished: %s\n", r.StartLatency, r.StopLatency)
	fmt.Fprintf(&sb, "  %-38s | %10s | %10s | %10s | %9s | %s\n", "figure", "start", "peak", "end", "end/start", "returned to start")
	all := true
	line := func(name string, start, peak, end, scale float64, unit string, ok bool, rule string) {
		f := func(v float64) string {
			if scale == 1 {
				return strconv.FormatFloat(v, 'f', 0, 64) + unit
			}
			return strconv.FormatFloat(v/scale, 'f', 1, 64) + unit
		}
		ratio := "-"
		if start > 0 {
			ratio = fmt.Sprintf("%.2f", end/start)
		}
		yes := "yes"
		if !ok {
			yes, all = "NO", false
		}
		fmt.Fprintf(&sb, "  %-38s | %10s | %10s | %10s | %9s | %s (%s)\n", name, f(start), f(peak), f(end), ratio, yes, rule)
	}
	s, p, e := r.Start, r.Peak, r.End
	line("CAPSTREAM_COMMANDS messages", float64(s.Msgs), float64(p.Msgs), float64(e.Msgs), 1, "", e.Msgs == s.Msgs, "exact")
	line("CAPSTREAM_COMMANDS bytes", float64(s.Bytes), float64(p.Bytes), float64(e.Bytes), 1, "", e.Bytes == s.Bytes, "exact")
	heapRule := fmt.Sprintf("within %.0f%% or %d MiB", (churnHeapRatio-1)*100, churnHeapSlack/mib)
	rssRule := fmt.Sprintf("within %.0f%% or %d MiB", (churnRSSRatio-1)*100, churnRSSSlack/mib)
	grRule := fmt.Sprintf("within %d", churnGoroutineAdd)
	for _, c := range []struct {
		name          string
		s, p, e       churnProc
		gcsAtS, gcsAt int
	}{{"router", s.Router, p.Router, e.Router, s.Router.GCs, e.Router.GCs}, {"producer", s.Producer, p.Producer, e.Producer, s.Producer.GCs, e.Producer.GCs}} {
		line(c.name+" heap live after GC", float64(c.s.Live), float64(c.p.Live), float64(c.e.Live), mib, " MiB",
			returned(float64(c.s.Live), float64(c.e.Live), churnHeapRatio, churnHeapSlack), heapRule)
		line(c.name+" heap in use (go_memstats)", float64(c.s.HeapInuse), float64(c.p.HeapInuse), float64(c.e.HeapInuse), mib, " MiB",
			returned(float64(c.s.HeapInuse), float64(c.e.HeapInuse), churnHeapRatio, churnHeapSlack), heapRule)
		line(c.name+" RSS (peak: VmHWM)", float64(c.s.RSS), float64(c.p.RSS), float64(c.e.RSS), mib, " MiB",
			returned(float64(c.s.RSS), float64(c.e.RSS), churnRSSRatio, churnRSSSlack), rssRule)
		line(c.name+" goroutines", c.s.Goroutines, c.p.Goroutines, c.e.Goroutines, 1, "",
			c.e.Goroutines <= c.s.Goroutines+churnGoroutineAdd, grRule)
	}
	fmt.Fprintf(&sb, "  RSS at end is the lowest VmRSS sampled once the heap was read, until none lower for %s (%s here; at the heap's reading: router %.1f MiB, producer %.1f MiB)\n",
		churnRSSQuiet, r.RSSSettle.Round(time.Second), float64(r.RouterRSSAtHeap)/mib, float64(r.ProducerRSSAtHeap)/mib)
	fmt.Fprintf(&sb, "  collections during the phase: router %d, producer %d (heap live is the last one's mark, whole MiB, read after two collections past each level)\n",
		e.Router.GCs-s.Router.GCs, e.Producer.GCs-s.Producer.GCs)
	fmt.Fprintf(&sb, "  producer: commands received %s; captures running at the end %.0f; router published %s; cycles the producer was not seen to start %d, to finish %d\n",
		fmtCounts(r.ProducerCommands), r.ProducerCaptures, fmtCounts(r.RouterPublished), r.StartMissed, r.StopMissed)
	mark := "met"
	if !all || len(r.Problems) > 0 {
		mark = "MISSED"
	}
	fmt.Fprintf(&sb, "  %-6s after %d create/delete cycles the commands stream and the router's and producer's memory are back at their starting level\n", mark, r.Cycles)
	return sb.String()
}

func fmtCounts(m map[string]float64) string {
	if len(m) == 0 {
		return "(none read)"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %.0f", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// runChurnOnly is -churn-only: the churn phase and nothing else.
func runChurnOnly(ctx context.Context, o options, stdout io.Writer) (*result, error) {
	res := &result{Machine: readMachine(), Options: o}
	dir, err := os.MkdirTemp("", "capstream-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	fmt.Fprintln(o.Log, "bench: churn phase")
	if res.Churn, err = runChurn(ctx, o, dir); err != nil {
		return nil, fmt.Errorf("churn phase: %w", err)
	}
	res.Problems = res.Churn.Problems
	m := res.Machine
	report := fmt.Sprintf("machine: %d CPUs (%s), %d MiB, Linux %s, %s, %s\n", m.CPUs, m.Model, m.MemMiB, m.Kernel, m.Go, m.Date.Format(time.RFC3339)) +
		res.Churn.report()
	fmt.Fprint(stdout, report)
	if o.Out != "" {
		if err := os.MkdirAll(o.Out, 0o755); err != nil {
			return res, err
		}
		name := filepath.Join(o.Out, time.Now().UTC().Format("20060102T150405Z")+"-churn.txt")
		if err := os.WriteFile(name, []byte(report), 0o644); err != nil {
			return res, err
		}
		fmt.Fprintln(o.Log, "bench: results written to", name)
	}
	if len(res.Problems) > 0 {
		return res, fmt.Errorf("churn: %v", res.Problems)
	}
	return res, nil
}

// churnChild is the router or the producer as a process.
type churnChild struct {
	name       string
	cmd        *exec.Cmd
	metricsURL string
	readyURL   string
	done       chan struct{}
	err        error // set before done closes
	stopOnce   sync.Once
	exit       string

	mu      sync.Mutex
	gcs     int
	live    int64 // the last collection's
	maxLive int64
}

// startChurnChild writes cfg (plus the log and http sections) and starts
// `capstream <name>` with GODEBUG=gctrace=1.
func startChurnChild(ctx context.Context, o options, dir, bin, name, cfg string) (*churnChild, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	cfg += fmt.Sprintf("log:\n  level: warn\n  format: text\nhttp:\n  listen: %s\n", addr)
	path := filepath.Join(dir, "churn-"+name+".yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, bin, name, "--config", path)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = exitTimeout
	// Overrides from the harness's environment would change what is
	// measured: drop them.
	env := []string{"GODEBUG=gctrace=1"}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CAPSTREAM_ROUTER_") && !strings.HasPrefix(kv, "CAPSTREAM_PRODUCER_") &&
			!strings.HasPrefix(kv, "GODEBUG=") && !strings.HasPrefix(kv, "GOGC=") && !strings.HasPrefix(kv, "GOMEMLIMIT=") {
			env = append(env, kv)
		}
	}
	cmd.Env = env
	c := &churnChild{name: name, cmd: cmd, metricsURL: "http://" + addr + "/metrics", readyURL: "http://" + addr + "/readyz", done: make(chan struct{})}
	cmd.Stdout = &prefixWriter{w: o.Log, prefix: "bench: " + name + ": "}
	cmd.Stderr = &gcTraceWriter{c: c, rest: cmd.Stdout}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

func (c *churnChild) pid() int { return c.cmd.Process.Pid }

func (c *churnChild) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM once, waits for the exit and says how it went (""
// for a clean exit).
func (c *churnChild) stop() string {
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

// waitReady polls /readyz until it answers 200.
func (c *churnChild) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		resp, err := scrapeClient.Get(c.readyURL)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("readyz: %s", resp.Status)
		}
		if c.exited() {
			return fmt.Errorf("%s exited: %v", c.name, c.err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready within %s: %w", c.name, timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// metrics returns the child's /metrics body.
func (c *churnChild) metrics() ([]byte, error) {
	resp, err := scrapeClient.Get(c.metricsURL)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

// scrapeVec returns the series of metric name by the value of label.
func (c *churnChild) scrapeVec(name, label string) (map[string]float64, error) {
	raw, err := c.metrics()
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	prefix := name + "{"
	for line := range bytes.Lines(raw) {
		series, v, ok := strings.Cut(strings.TrimSpace(string(line)), " ")
		if !ok || !strings.HasPrefix(series, prefix) {
			continue
		}
		_, rest, ok := strings.Cut(series, label+`="`)
		if !ok {
			continue
		}
		val, _, _ := strings.Cut(rest, `"`)
		if x, err := strconv.ParseFloat(v, 64); err == nil {
			out[val] += x
		}
	}
	return out, nil
}

// scrape returns the value of the unlabelled metric name.
func (c *churnChild) scrape(name string) (float64, error) {
	raw, err := c.metrics()
	if err != nil {
		return 0, err
	}
	for line := range bytes.Lines(raw) {
		series, v, ok := strings.Cut(strings.TrimSpace(string(line)), " ")
		if ok && series == name {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("no %s on %s", name, c.metricsURL)
}

// memory returns heap in use and goroutines from /metrics and VmRSS; a
// figure that could not be read is 0.
func (c *churnChild) memory() (inuse int64, goroutines float64, rss int64) {
	if raw, err := c.metrics(); err == nil {
		for line := range bytes.Lines(raw) {
			series, v, ok := strings.Cut(strings.TrimSpace(string(line)), " ")
			if !ok {
				continue
			}
			x, err := strconv.ParseFloat(v, 64)
			if err != nil {
				continue
			}
			switch series {
			case heapInuse:
				inuse = int64(x)
			case "go_goroutines":
				goroutines = x
			}
		}
	}
	if !c.exited() {
		rss, _, _ = procMem(c.pid())
	}
	return inuse, goroutines, rss
}

func (c *churnChild) gcCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gcs
}

func (c *churnChild) lastLive() (int64, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.live, c.gcs
}

// resetPeak starts the peak live heap again from the last collection's.
func (c *churnChild) resetPeak() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.maxLive = c.live
}

func (c *churnChild) peakLive() (int64, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.maxLive, c.gcs
}

// gcTrace matches a gctrace line (runtime package doc): "gc N @T s P%:
// ... ms cpu, START->END->LIVE MB, ...".
var gcTrace = regexp.MustCompile(`^gc \d+ @[0-9.]+s [0-9]+%: .* ([0-9]+)->([0-9]+)->([0-9]+) MB`)

// gcTraceWriter takes a child's stderr: gctrace lines update the child's
// collection count and live heap, every other line goes to rest.
type gcTraceWriter struct {
	c    *churnChild
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
