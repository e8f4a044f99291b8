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
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/router"
	"github.com/capstream/capstream/router/selector"
	"github.com/capstream/capstream/schemas"
	v3 "github.com/capstream/capstream/schemas/v3"
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
	o          options
	ns         string
	kube       kubernetes.Interface
	dyn        dynamic.Interface
	kubeconfig string
	id         string
	pods       []*rsPod
	captures   []*rsCapture
	state      rsState
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

// settleGC lets two collections complete in the child, driven by
// scraping /metrics, so its last live heap is the current one.
func settleGC(ctx context.Context, c *churnChild) error {
	n := c.gcCount()
	deadline := time.Now().Add(churnGCWait)
	for c.gcCount() < n+2 {
		if time.Now().After(deadline) {
			return fmt.Errorf("fewer than two collections in the router within %s", churnGCWait)
		}
		if c.exited() {
			return fmt.Errorf("%s exited: %v", c.name, c.err)
		}
		_, _ = c.metrics()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
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

// onCommand records the last command of each subject and wakes a label
// change waiting for it.
func (e *routerScaleEnv) onCommand(m *nats.Msg) {
	var pods []string
	if len(m.Data) > 0 {
		c, err := schemas.DecodeCommand(m.Data)
		if err != nil {
			e.state.mu.Lock()
			e.state.bad = append(e.state.bad, fmt.Sprintf("%s: %v", m.Subject, err))
			e.state.mu.Unlock()
			return
		}
		if c.Action == schemas.ActionCapture {
			pods = make([]string, 0, len(c.Endpoints))
			for _, ep := range c.Endpoints {
				pods = append(pods, ep.Pod)
			}
			slices.Sort(pods)
		}
	}
	e.state.mu.Lock()
	defer e.state.mu.Unlock()
	if e.state.msgs == 0 {
		e.state.first = time.Now()
	}
	e.state.msgs++
	if len(pods) == 0 {
		delete(e.state.cmds, m.Subject)
	} else {
		e.state.cmds[m.Subject] = pods
	}
	if e.state.waitCh != nil && m.Subject == e.state.waitSubj {
		if _, ok := slices.BinarySearch(pods, e.state.waitPod); ok {
			close(e.state.waitCh)
			e.state.waitCh = nil
		}
	}
}

// waitFull waits until the bus holds exactly want, up to timeout.
func (e *routerScaleEnv) waitFull(ctx context.Context, want map[string][]string, c *churnChild, timeout time.Duration) (bool, error) {
	deadline := time.Now().Add(timeout)
	for {
		e.state.mu.Lock()
		ok := maps.EqualFunc(e.state.cmds, want, slices.Equal)
		e.state.mu.Unlock()
		if ok {
			return true, nil
		}
		if c.exited() {
			return false, fmt.Errorf("router exited: %v", c.err)
		}
		if time.Now().After(deadline) {
			return false, nil
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// diff summarises how the bus differs from want.
func (e *routerScaleEnv) diff(want map[string][]string) string {
	e.state.mu.Lock()
	defer e.state.mu.Unlock()
	var missing, wrong, extra int
	example := ""
	for s, pods := range want {
		got, ok := e.state.cmds[s]
		switch {
		case !ok:
			missing++
			if example == "" {
				example = "missing " + s
			}
		case !slices.Equal(got, pods):
			wrong++
			if example == "" {
				example = fmt.Sprintf("%s lists %v, want %v", s, got, pods)
			}
		}
	}
	for s := range e.state.cmds {
		if _, ok := want[s]; !ok {
			extra++
			if example == "" {
				example = "unexpected " + s
			}
		}
	}
	return fmt.Sprintf("%d missing, %d with other endpoints, %d unexpected (%s)", missing, wrong, extra, example)
}

// changes gives n sampled pods, one at a time, an app label that a plain
// app capture selects, and times each until that capture's command on the
// pod's node lists the pod.
func (e *routerScaleEnv) changes(ctx context.Context, n int) (latencies, int, error) {
	rng := rand.New(rand.NewPCG(14, 4)) //nolint:gosec // a reproducible sample
	var plain []*rsCapture
	for _, c := range e.captures {
		if c.plainApp != "" {
			plain = append(plain, c)
		}
	}
	if len(plain) < 2 || n == 0 {
		return latencies{}, 0, nil
	}
	var lat []time.Duration
	missed := 0
	sample := rng.Perm(len(e.pods))[:min(n, len(e.pods))]
	for k, i := range sample {
		if missed >= routerScaleGiveUp && len(lat) == 0 {
			missed += len(sample) - k
			break
		}
		p := e.pods[i]
		c := plain[rng.IntN(len(plain))]
		if c.plainApp == p.app {
			c = plain[(slices.Index(plain, c)+1)%len(plain)]
		}
		subj, _ := schemas.CommandSubject(p.node, e.ns, c.name)
		ch := make(chan struct{})
		e.state.mu.Lock()
		e.state.waitSubj, e.state.waitPod, e.state.waitCh = subj, p.name, ch
		e.state.mu.Unlock()
		patch := fmt.Sprintf(`{"metadata":{"labels":{"app":%q}}}`, c.plainApp)
		t0 := time.Now()
		if _, err := e.kube.CoreV1().Pods(e.ns).Patch(ctx, p.name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			return latencies{}, 0, fmt.Errorf("relabel pod %s: %w", p.name, err)
		}
		p.app = c.plainApp
		select {
		case <-ch:
			lat = append(lat, time.Since(t0))
		case <-time.After(routerScaleChangeWait):
			missed++
			e.state.mu.Lock()
			e.state.waitCh = nil
			e.state.mu.Unlock()
		case <-ctx.Done():
			return latencies{}, 0, ctx.Err()
		}
	}
	return newLatencies(lat), missed, nil
}

// connect builds the clients, installs the CRD and creates the namespace.
func (e *routerScaleEnv) connect(ctx context.Context) error {
	path := testenv.Getenv(testenv.EnvKubeconfig)
	if path == "" {
		return errors.New(testenv.EnvKubeconfig + " is not set (is deploy/dev/deps.sh up?)")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return fmt.Errorf("load kubeconfig %s: %w", path, err)
	}
	cfg.QPS, cfg.Burst = 2000, 4000 // the harness is bounded by its concurrency
	if e.kube, err = kubernetes.NewForConfig(cfg); err != nil {
		return err
	}
	if e.dyn, err = dynamic.NewForConfig(cfg); err != nil {
		return err
	}
	ext, err := apiextensionsclient.NewForConfig(cfg)
	if err != nil {
		return err
	}
	e.kubeconfig = path
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := testenv.InstallCRD(cctx, ext); err != nil {
		return err
	}
	_, err = e.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: e.ns,
		Labels: map[string]string{"bench": "router-scale"}}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create namespace %s: %w", e.ns, err)
	}
	return nil
}

// podObject is a pod as a workload controller makes it: annotations, two
// containers with env, mounts and resources, volumes.
func (e *routerScaleEnv) podObject(p *rsPod) *corev1.Pod {
	ann := map[string]string{}
	for i := range 8 {
		ann[fmt.Sprintf("example.com/annotation-%d", i)] = fmt.Sprintf("%s-value-%d", p.app, i)
	}
	var env []corev1.EnvVar
	for i := range 12 {
		env = append(env, corev1.EnvVar{Name: fmt.Sprintf("CONFIG_%02d", i), Value: fmt.Sprintf("configuration-value-%d", i)})
	}
	ctr := func(name string) corev1.Container {
		return corev1.Container{Name: name, Image: "registry.k8s.io/pause:3.10", Env: env,
			VolumeMounts: []corev1.VolumeMount{{Name: "config", MountPath: "/etc/config"}}}
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.name, Namespace: e.ns, Labels: p.labels(), Annotations: ann},
		Spec: corev1.PodSpec{NodeName: p.node, ServiceAccountName: "default",
			Containers: []corev1.Container{ctr("app"), ctr("sidecar")},
			Volumes: []corev1.Volume{{Name: "config", VolumeSource: corev1.VolumeSource{
				ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: p.app}}}}}},
	}
}

// createPods creates every pod and sets it Running with an IP,
// -router-scale-concurrency calls at a time.
func (e *routerScaleEnv) createPods(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(e.o.RouterScaleConcurrency)
	pods := e.kube.CoreV1().Pods(e.ns)
	var done atomic.Int64
	begin := time.Now()
	for j, p := range e.pods {
		g.Go(func() error {
			pod, err := pods.Create(gctx, e.podObject(p), metav1.CreateOptions{})
			if err != nil {
				return fmt.Errorf("create pod %s: %w", p.name, err)
			}
			ip := fmt.Sprintf("10.%d.%d.%d", 64+j>>16, (j>>8)&255, j&255)
			pod.Status.Phase, pod.Status.PodIP, pod.Status.PodIPs = corev1.PodRunning, ip, []corev1.PodIP{{IP: ip}}
			if _, err := pods.UpdateStatus(gctx, pod, metav1.UpdateOptions{}); err != nil {
				return fmt.Errorf("pod %s status: %w", p.name, err)
			}
			if n := done.Add(1); n%2000 == 0 {
				fmt.Fprintf(e.o.Log, "bench: router scale: %d of %d pods, %.0f/s\n", n, len(e.pods), float64(n)/time.Since(begin).Seconds())
			}
			return nil
		})
	}
	return g.Wait()
}

func (e *routerScaleEnv) createCaptures(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(e.o.RouterScaleConcurrency)
	for _, c := range e.captures {
		g.Go(func() error {
			pc := &v3.PacketCapture{
				TypeMeta:   metav1.TypeMeta{APIVersion: v3.SchemeGroupVersion.String(), Kind: v3.Kind},
				ObjectMeta: metav1.ObjectMeta{Name: c.name, Namespace: e.ns},
				Spec:       v3.PacketCaptureSpec{Selector: c.sel},
			}
			u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(pc)
			if err != nil {
				return err
			}
			if _, err := e.dyn.Resource(v3.Resource).Namespace(e.ns).Create(gctx, &unstructured.Unstructured{Object: u}, metav1.CreateOptions{}); err != nil {
				return fmt.Errorf("create capture %s/%s: %w", e.ns, c.name, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// cleanup deletes the captures and the pods one by one (the dev API
// server never finishes a namespace's deletion, so its objects would
// stay), then the namespace; on a context of its own, so it runs after an
// interrupt too.
func (e *routerScaleEnv) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	zero := int64(0)
	del := func(name string, f func(context.Context, string, metav1.DeleteOptions) error) func() error {
		return func() error {
			if err := f(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("delete %s: %w", name, err)
			}
			return nil
		}
	}
	g := new(errgroup.Group)
	g.SetLimit(e.o.RouterScaleConcurrency)
	for _, c := range e.captures {
		g.Go(del(c.name, func(ctx context.Context, name string, o metav1.DeleteOptions) error {
			return e.dyn.Resource(v3.Resource).Namespace(e.ns).Delete(ctx, name, o)
		}))
	}
	for _, p := range e.pods {
		g.Go(del(p.name, e.kube.CoreV1().Pods(e.ns).Delete))
	}
	if err := g.Wait(); err != nil {
		fmt.Fprintf(e.o.Log, "bench: router scale cleanup: %v\n", err)
	}
	if err := e.kube.CoreV1().Namespaces().Delete(ctx, e.ns, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		fmt.Fprintf(e.o.Log, "bench: delete namespace %s: %v\n", e.ns, err)
	}
}

// routerConfig is the router's: the connections, the private namespace,
// no election and a client rate that lets it write 500 statuses quickly;
// every other setting is the default.
func (e *routerScaleEnv) routerConfig(natsURL string) string {
	return fmt.Sprintf(`kube:
  kubeconfig: %q
  qps: 200
  burst: 400
nats:
  url: %s
  name: capstream-router
  plaintext: true
  anonymous: true
router:
  namespace: %s
  leaderElection:
    enabled: false
`, e.kubeconfig, natsURL, e.ns)
}

// report prints the figures and the targets.
func (r *routerScaleResult) report() string {
	const mib = 1 << 20
	var sb strings.Builder
	fmt.Fprintf(&sb, "router scale (router as a process on the real kube-apiserver and an embedded JetStream server; %d pods on %d nodes and %d PacketCaptures in one namespace, no kubelet):\n",
		r.Pods, r.Nodes, r.Captures)
	fmt.Fprintf(&sb, "  setup: %d pods created and set Running in %s (%.0f pods/s), %d captures in %s; %d expected commands, %d endpoints\n",
		r.Pods, r.Create.Round(time.Millisecond), float64(r.Pods)/r.Create.Seconds(), r.Captures, r.CreateCaptures.Round(time.Millisecond), r.Expected, r.Endpoints)
	met := func(ok bool) string {
		if ok {
			return "met"
		}
		return "MISSED"
	}
	fmt.Fprintf(&sb, "  %-44s | %s\n", "figure", "value")
	row := func(name, v string) { fmt.Fprintf(&sb, "  %-44s | %s\n", name, v) }
	row("router start -> ready (informers synced)", r.Ready.Round(time.Millisecond).String())
	row("router start -> first full set of commands", r.FirstFull.Round(time.Millisecond).String())
	rate := 0.0
	if r.Publish > 0 {
		rate = float64(r.Msgs) / r.Publish.Seconds()
	}
	row("commands/s (first message -> full set)", fmt.Sprintf("%.0f (%d messages in %s)", rate, r.Msgs, r.Publish.Round(time.Millisecond)))
	row("label change -> command, p50", r.Latency.P50.Round(time.Millisecond).String())
	row("label change -> command, p99 (target < 1s)", fmt.Sprintf("%s, max %s: %s", r.Latency.P99.Round(time.Millisecond), r.Latency.Max.Round(time.Millisecond),
		met(r.Changes > 0 && r.Missed == 0 && r.Latency.P99 < routerScaleP99Target)))
	row("label changes missed", fmt.Sprintf("%d of %d", r.Missed, r.Changes))
	row("router mean reconcile (its histogram)", fmt.Sprintf("%s over %.0f reconciles", r.ReconcileMean.Round(time.Microsecond), r.Reconciles))
	row("router VmRSS after the first full set", fmt.Sprintf("%.1f MiB", float64(r.RSS)/mib))
	row("router VmHWM (peak, target < 512 MiB)", fmt.Sprintf("%.1f MiB: %s", float64(r.HWM)/mib, met(r.HWM > 0 && r.HWM < routerScaleRSSTarget)))
	row("router live heap after GC / heap in use", fmt.Sprintf("%.0f MiB / %.1f MiB", float64(r.Live)/mib, float64(r.HeapInuse)/mib))
	row("commands equal the model after the changes", fmt.Sprintf("%v", r.Settled))
	fmt.Fprintf(&sb, "  phase %s (build %s, cleanup %s); router exit: %s\n", r.Wall.Round(time.Millisecond), r.Build.Round(time.Millisecond),
		r.Cleanup.Round(time.Millisecond), cmpOr(r.RouterExit, "clean"))
	for _, p := range r.Problems {
		fmt.Fprintf(&sb, "  PROBLEM: %s\n", p)
	}
	return sb.String()
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// runRouterScaleOnly is -router-scale: the phase and nothing else.
func runRouterScaleOnly(ctx context.Context, o options, stdout io.Writer) (*result, error) {
	res := &result{Machine: readMachine(), Options: o}
	dir, err := os.MkdirTemp("", "capstream-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	fmt.Fprintln(o.Log, "bench: router scale phase")
	rs, err := runRouterScale(ctx, o, dir)
	if err != nil {
		return nil, fmt.Errorf("router scale phase: %w", err)
	}
	res.Problems = rs.Problems
	m := res.Machine
	report := fmt.Sprintf("machine: %d CPUs (%s), %d MiB, Linux %s, %s, %s\n", m.CPUs, m.Model, m.MemMiB, m.Kernel, m.Go, m.Date.Format(time.RFC3339)) +
		rs.report()
	fmt.Fprint(stdout, report)
	if o.Out != "" {
		if err := os.MkdirAll(o.Out, 0o755); err != nil {
			return res, err
		}
		name := filepath.Join(o.Out, time.Now().UTC().Format("20060102T150405Z")+"-router-scale.txt")
		if err := os.WriteFile(name, []byte(report), 0o644); err != nil {
			return res, err
		}
		fmt.Fprintln(o.Log, "bench: results written to", name)
	}
	if len(res.Problems) > 0 {
		return res, fmt.Errorf("router scale: %v", res.Problems)
	}
	return res, nil
}
