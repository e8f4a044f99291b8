package main

// The router scale phase (-router-scale, nothing else): the router as a
// process of its own (the `capstream` binary) on an embedded JetStream
// server and the real kube-apiserver, facing a cluster's worth of pods
// and captures: -router-scale-pods pods (20,000 by default) spread over
// -router-scale-nodes nodes (1000) and -router-scale-captures
// PacketCaptures (500), all in one private namespace, because a router
// watches either one namespace or the whole cluster, and the dev API
// server is shared (a cluster-wide router would write other runs'
// capture status). One namespace is the router's worst case besides:
// every reconcile lists every pod.
//
// No kubelet runs: pods are created with spec.nodeName and set Running
// with an IP through the status subresource, -router-scale-concurrency
// calls at a time. Each pod carries annotations, two containers with env
// and volumes, as real ones do, so the informer transforms have something
// to drop. Labels come from a seeded generator: app (about 50 pods per
// app), tier (web, api or db) and version (v1 or v2); capture i selects
// tier == 'db' when i%50 == 0 (a third of the cluster), app == 'app-K'
// && version == 'v2' when i%3 == 1, app == 'app-K' otherwise, K = i mod
// the number of apps.
//
// The harness computes every (node, capture) command the router must
// publish (with the router's own EndpointLabels and selector), starts the
// router once everything exists and subscribes to the command subjects:
//   - first full set: router start until every expected command holds
//     exactly its expected endpoints, and nothing else is commanded;
//   - commands/s over that interval;
//   - router RSS (VmRSS after the first full set and VmHWM at the end)
//     and its live heap after two collections (gctrace, as in churn.go);
//   - reconcile latency: -router-scale-changes sampled pods, one at a
//     time, get a new app label; from the update call until the command
//     of the new app's capture on the pod's node lists the pod (p50/p99);
//   - afterwards the whole command set must again equal the expected one.
// Targets (reconcile p99 < 1 s, RSS < 512 MiB) are printed as met or
// MISSED and never fail the run; missing or wrong commands do.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/capstream/capstream/router"
	"github.com/capstream/capstream/router/selector"
	"github.com/capstream/capstream/schemas"
)

// Targets of issue 14, reported, never asserted.
const (
	routerScaleP99Target = time.Second
	routerScaleRSSTarget = 512 << 20
	// routerScaleAppSize is about how many pods share an app label.
	routerScaleAppSize = 50
)

// routerScaleChangeWait bounds each wait for one label change's command;
// after routerScaleGiveUp misses in a row the remaining changes are
// counted missed without being tried. The test shortens the wait.
var routerScaleChangeWait = 30 * time.Second

const routerScaleGiveUp = 3

// routerScaleDefaults are the flags' defaults: issue 14's cluster.
var routerScaleDefaults = struct{ nodes, pods, captures, changes, concurrency int }{1000, 20000, 500, 200, 48}

// routerScaleResult is the phase's figures.
type routerScaleResult struct {
	Nodes, Pods, Captures, Changes int
	// Expected is the number of (node, capture) commands the pods and
	// captures call for; Endpoints the endpoints they list in all.
	Expected, Endpoints int
	// Create is creating the pods (and setting them Running), Captures
	// the captures; Build the capstream binary when it was built.
	Create, CreateCaptures, Build time.Duration
	// Ready is router start to /readyz (informers synced); FirstFull
	// router start to the full expected set on the bus.
	Ready, FirstFull time.Duration
	// Msgs is the command messages seen until the first full set, over
	// Publish (first message to full set).
	Msgs    int
	Publish time.Duration
	// RSS is VmRSS after the first full set, HWM the VmHWM at the end;
	// Live the live heap after two collections, HeapInuse the gauge.
	RSS, HWM, Live, HeapInuse int64
	// Latency is label change to command; Missed the changes whose
	// command did not come within routerScaleChangeWait.
	Latency latencies
	Missed  int
	// ReconcileMean is the router's own mean reconcile time (histogram
	// sum over count) over the whole run, and Reconciles that count.
	ReconcileMean time.Duration
	Reconciles    float64
	// Settled says whether the command set equalled the expected one
	// again after the label changes.
	Settled    bool
	Cleanup    time.Duration
	Wall       time.Duration
	RouterExit string
	Problems   []string
}

// rsPod is one pod as the harness models it.
type rsPod struct {
	name, node, app, tier, version string
}

func (p *rsPod) labels() map[string]string {
	return map[string]string{"app": p.app, "tier": p.tier, "version": p.version, "pod-template-hash": "7d9f8c6b5"}
}

// rsCapture is one capture and its selector.
type rsCapture struct {
	name, sel string
	parsed    *selector.Selector
	plainApp  string // set when the selector is app == plainApp alone
}

// rsState is what the bus says, per command subject: the endpoints' pods
// of a capture command (nil: stopped or never).
type rsState struct {
	mu       sync.Mutex
	cmds     map[string][]string
	msgs     int
	first    time.Time
	bad      []string
	waitSubj string
	waitPod  string
	waitCh   chan struct{}
}

type routerScaleEnv struct {
	kubeClients
	o        options
	ns       string
	id       string
	pods     []*rsPod
	captures []*rsCapture
	state    rsState
}

// runRouterScale runs the phase in dir.
func runRouterScale(ctx context.Context, o options, dir string) (*routerScaleResult, error) {
	r := &routerScaleResult{Nodes: o.RouterScaleNodes, Pods: o.RouterScalePods, Captures: o.RouterScaleCaptures, Changes: o.RouterScaleChanges}
	t0 := time.Now()
	defer func() { r.Wall = time.Since(t0) }()
	bin := filepath.Join(dir, "capstream")
	if _, err := os.Stat(bin); err != nil {
		if err := buildBinary(ctx, bin); err != nil {
			return r, err
		}
		r.Build = time.Since(t0)
	}
	e := &routerScaleEnv{o: o, state: rsState{cmds: map[string][]string{}}}
	e.model(o.RouterScaleNodes, o.RouterScalePods, o.RouterScaleCaptures)
	if err := e.connect(ctx); err != nil {
		return r, err
	}
	defer func() {
		tc := time.Now()
		e.cleanup()
		r.Cleanup = time.Since(tc)
	}()
	tp := time.Now()
	if err := e.createPods(ctx); err != nil {
		return r, err
	}
	r.Create = time.Since(tp)
	fmt.Fprintf(o.Log, "bench: router scale: %d pods on %d nodes in %s\n", len(e.pods), o.RouterScaleNodes, r.Create.Round(time.Millisecond))
	tp = time.Now()
	if err := e.createCaptures(ctx); err != nil {
		return r, err
	}
	r.CreateCaptures = time.Since(tp)
	expected := e.expected()
	r.Expected = len(expected)
	for _, pods := range expected {
		r.Endpoints += len(pods)
	}

	bus, err := startPhaseBus(dir, "router-scale")
	if err != nil {
		return r, err
	}
	defer bus.close()
	nc := bus.nc
	sub, err := nc.Subscribe(schemas.CommandSubjectsAll, e.onCommand)
	if err != nil {
		return r, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	// The first full set is tens of thousands of messages at once.
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		return r, err
	}
	if err := nc.Flush(); err != nil {
		return r, err
	}

	ts := time.Now()
	rt, err := startChurnChild(ctx, o, dir, bin, "router", e.routerConfig(bus.URL))
	if err != nil {
		return r, err
	}
	defer func() { r.RouterExit = rt.stop() }()
	if err := rt.waitReady(ctx, o.Timeout); err != nil {
		return r, err
	}
	r.Ready = time.Since(ts)
	full, err := e.waitFull(ctx, expected, rt, o.Timeout)
	if err != nil {
		return r, err
	}
	r.FirstFull = time.Since(ts)
	e.state.mu.Lock()
	r.Msgs, r.Publish = e.state.msgs, time.Since(e.state.first)
	e.state.mu.Unlock()
	if !full {
		r.Problems = append(r.Problems, fmt.Sprintf("the router did not publish the %d expected commands within %s: %s", r.Expected, o.Timeout, e.diff(expected)))
		return r, nil
	}
	fmt.Fprintf(o.Log, "bench: router scale: %d commands (%d endpoints) on the bus %s after the router started\n", r.Expected, r.Endpoints, r.FirstFull.Round(time.Millisecond))
	if err := settleGC(ctx, rt); err != nil {
		return r, err
	}
	r.Live, _ = rt.lastLive()
	r.HeapInuse, _, r.RSS = rt.memory()

	if r.Latency, r.Missed, err = e.changes(ctx, o.RouterScaleChanges); err != nil {
		return r, err
	}
	if r.Settled, err = e.waitFull(ctx, e.expected(), rt, o.Timeout); err != nil {
		return r, err
	}
	if !r.Settled {
		r.Problems = append(r.Problems, "after the label changes the commands differ from the expected ones: "+e.diff(e.expected()))
	}
	if r.Missed > 0 {
		r.Problems = append(r.Problems, fmt.Sprintf("%d of %d label changes did not reach the bus within %s", r.Missed, r.Changes, routerScaleChangeWait))
	}
	if sum, err := rt.scrape("capstream_router_reconcile_duration_seconds_sum"); err == nil {
		if n, err := rt.scrape("capstream_router_reconcile_duration_seconds_count"); err == nil && n > 0 {
			r.ReconcileMean, r.Reconciles = time.Duration(sum/n*float64(time.Second)), n
		}
	}
	if _, hwm, err := procMem(rt.pid()); err == nil {
		r.HWM = hwm
	}
	if r.RouterExit = rt.stop(); r.RouterExit != "" {
		r.Problems = append(r.Problems, "router exit: "+r.RouterExit)
	}
	e.state.mu.Lock()
	if len(e.state.bad) > 0 {
		r.Problems = append(r.Problems, fmt.Sprintf("%d undecodable commands, first: %s", len(e.state.bad), e.state.bad[0]))
	}
	e.state.mu.Unlock()
	return r, nil
}

// model draws the pods' labels and the captures' selectors.
func (e *routerScaleEnv) model(nodes, pods, captures int) {
	rng := rand.New(rand.NewPCG(14, 3)) //nolint:gosec // a reproducible workload, not a secret
	apps := max(pods/routerScaleAppSize, 4)
	idb := make([]byte, 4)
	for i := range idb {
		idb[i] = "abcdefghijklmnopqrstuvwxyz0123456789"[rand.IntN(36)] //nolint:gosec // a name
	}
	e.id = string(idb)
	e.ns = "bench-rs-" + e.id
	tiers := []string{"web", "api", "db"}
	for j := range pods {
		e.pods = append(e.pods, &rsPod{
			name:    fmt.Sprintf("pod-%05d", j),
			node:    fmt.Sprintf("rs-%s-node-%04d", e.id, j%nodes),
			app:     fmt.Sprintf("app-%d", rng.IntN(apps)),
			tier:    tiers[rng.IntN(len(tiers))],
			version: []string{"v1", "v2"}[rng.IntN(2)],
		})
	}
	for i := range captures {
		c := &rsCapture{name: fmt.Sprintf("cap-%03d", i)}
		app := fmt.Sprintf("app-%d", i%apps)
		switch {
		case i%50 == 0:
			c.sel = "tier == 'db'"
		case i%3 == 1:
			c.sel = fmt.Sprintf("app == '%s' && version == 'v2'", app)
		default:
			c.sel, c.plainApp = fmt.Sprintf("app == '%s'", app), app
		}
		c.parsed = selector.MustParse(c.sel)
		e.captures = append(e.captures, c)
	}
}

// expected returns, per command subject, the sorted pods the router must
// list, from the model and the router's own endpoint labels.
func (e *routerScaleEnv) expected() map[string][]string {
	nsObj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: e.ns, Labels: map[string]string{"bench": "router-scale"}}}
	out := map[string][]string{}
	for _, p := range e.pods {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: p.name, Namespace: e.ns, Labels: p.labels()},
			Spec: corev1.PodSpec{NodeName: p.node, ServiceAccountName: "default"}, Status: corev1.PodStatus{Phase: corev1.PodRunning}}
		labels := router.EndpointLabels(pod, nsObj)
		for _, c := range e.captures {
			if c.parsed.Evaluate(labels) {
				s, _ := schemas.CommandSubject(p.node, e.ns, c.name)
				out[s] = append(out[s], p.name)
			}
		}
	}
	for _, v := range out {
		slices.Sort(v)
	}
	return out
}
