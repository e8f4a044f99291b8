package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/capstream/capstream/router/selector"
	"github.com/capstream/capstream/schemas"
	v3 "github.com/capstream/capstream/schemas/v3"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
)

// Deps are the router's collaborators. Main builds the clients; the router
// only uses them from Run.
type Deps struct {
	// Logger receives the router's logs; component=router is added.
	Logger *slog.Logger
	// Registerer receives the router's metrics.
	Registerer prometheus.Registerer
	// Kube reads pods and namespaces, records events and holds the Lease.
	Kube kubernetes.Interface
	// Dynamic reads PacketCaptures and writes their status.
	Dynamic dynamic.Interface
	// JetStream publishes commands and consumes status reports.
	JetStream jetstream.JetStream
	// Now is the clock; nil means time.Now. Tests set it.
	Now func() time.Time
}

// Router watches PacketCaptures, pods and namespaces and keeps
// CAPSTREAM_COMMANDS equal to the desired state of every capture on every
// node, and writes the nodes' reports back to the captures' status.
//
// Every replica runs the informers, so a standby takes over with warm
// caches; only the replica holding the Lease runs the workqueues, the
// publisher and the status consumer. All goroutines are started by Run and
// have ended when it returns.
type Router struct {
	cfg     Config
	deps    Deps
	log     *slog.Logger
	metrics *metrics
	pub     *publisher
	book    *book
	scheme  *runtime.Scheme
	now     func() time.Time

	// Set by Run before the informers start.
	pods       corelisters.PodLister
	namespaces corelisters.NamespaceLister
	captures   cache.GenericLister
	recorder   record.EventRecorder

	synced atomic.Bool
	// leading is set while the leadership term's workers run.
	leading atomic.Bool

	mu sync.Mutex
	// queue and statusQueue exist only during a leadership term; handlers
	// drop keys while they are nil because a term starts with a full pass.
	queue       workqueue.TypedRateLimitingInterface[captureKey]
	statusQueue workqueue.TypedRateLimitingInterface[captureKey]
	// selectors caches parsed selectors for the pod and namespace handlers.
	selectors map[captureKey]parsedSelector
	// reported remembers, per capture, the UID and generation whose invalid
	// spec already produced an Event, so an Event is emitted once.
	reported map[captureKey]string
	invalid  map[captureKey]bool
}

type parsedSelector struct {
	text string
	sel  *selector.Selector
	err  error
}

// New checks the configuration and the dependencies. It does no I/O.
func New(cfg Config, deps Deps) (*Router, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("router config: %w", err)
	}
	var errs []error
	if deps.Logger == nil {
		errs = append(errs, errors.New("router: logger is required"))
	}
	if deps.Registerer == nil {
		errs = append(errs, errors.New("router: metrics registerer is required"))
	}
	if deps.Kube == nil || deps.Dynamic == nil {
		errs = append(errs, errors.New("router: kubernetes clients are required"))
	}
	if deps.JetStream == nil {
		errs = append(errs, errors.New("router: jetstream is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	m, err := newMetrics(deps.Registerer)
	if err != nil {
		return nil, err
	}
	scheme := runtime.NewScheme()
	if err := v3.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("router scheme: %w", err)
	}
	if cfg.LeaderElection.Identity == "" {
		cfg.LeaderElection.Identity = "capstream-router-" + string(uuid.NewUUID())
	}
	now := deps.Now
	if now == nil {
		now = time.Now
	}
	return &Router{
		cfg:       cfg,
		deps:      deps,
		log:       deps.Logger.With("component", "router"),
		metrics:   m,
		pub:       newPublisher(deps.JetStream, m),
		book:      newBook(),
		scheme:    scheme,
		now:       now,
		selectors: map[captureKey]parsedSelector{},
		reported:  map[captureKey]string{},
		invalid:   map[captureKey]bool{},
	}, nil
}

// Ready reports whether the caches are synced and NATS is connected. A
// standby replica is ready: it serves as soon as it wins the Lease.
func (r *Router) Ready() error {
	if !r.synced.Load() {
		return errors.New("informers not synced")
	}
	if nc := r.deps.JetStream.Conn(); nc == nil || !nc.IsConnected() {
		return errors.New("nats not connected")
	}
	return nil
}

// IsLeader reports whether this replica currently publishes commands.
func (r *Router) IsLeader() bool { return r.leading.Load() }

// Run starts the informers, then campaigns for the Lease and, while
// leading, reconciles captures and writes status. It returns nil when ctx
// ends and an error when the caches cannot sync.
func (r *Router) Run(ctx context.Context) error {
	scope := metav1.NamespaceAll
	if r.cfg.Namespace != "" {
		scope = r.cfg.Namespace
	}
	kubeInformers := informers.NewSharedInformerFactoryWithOptions(r.deps.Kube, r.cfg.ResyncPeriod,
		informers.WithTransform(stripManagedFields), informers.WithNamespace(scope))
	// Namespaces are cluster-scoped: a scoped router watches its own only.
	nsInformers := informers.NewSharedInformerFactoryWithOptions(r.deps.Kube, r.cfg.ResyncPeriod,
		informers.WithTransform(stripManagedFields), informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			if r.cfg.Namespace != "" {
				o.FieldSelector = "metadata.name=" + r.cfg.Namespace
			}
		}))
	pcInformers := dynamicinformer.NewFilteredDynamicSharedInformerFactory(r.deps.Dynamic, r.cfg.ResyncPeriod, scope, nil)
	podInf := kubeInformers.Core().V1().Pods()
	nsInf := nsInformers.Core().V1().Namespaces()
	pcInf := pcInformers.ForResource(v3.Resource)
	r.pods, r.namespaces, r.captures = podInf.Lister(), nsInf.Lister(), pcInf.Lister()
	if err := r.addHandlers(podInf.Informer(), nsInf.Informer(), pcInf.Informer()); err != nil {
		return err
	}

	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: r.deps.Kube.CoreV1().Events("")})
	r.recorder = broadcaster.NewRecorder(r.scheme, corev1.EventSource{Component: "capstream-router"})
	defer broadcaster.Shutdown()

	// The informers stop with informerCtx, which ends with Run whether it
	// returns because ctx ended or because of an error.
	informerCtx, stopInformers := context.WithCancel(ctx)
	kubeInformers.Start(informerCtx.Done())
	nsInformers.Start(informerCtx.Done())
	pcInformers.Start(informerCtx.Done())
	defer func() {
		stopInformers()
		kubeInformers.Shutdown()
		nsInformers.Shutdown()
		pcInformers.Shutdown()
	}()
	syncCtx, cancel := context.WithTimeout(ctx, r.cfg.StartupTimeout)
	ok := cache.WaitForCacheSync(syncCtx.Done(), podInf.Informer().HasSynced, nsInf.Informer().HasSynced, pcInf.Informer().HasSynced)
	cancel()
	if !ok {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("informers not synced within %s", r.cfg.StartupTimeout)
	}
	r.synced.Store(true)
	r.log.Info("caches synced")

	if !r.cfg.LeaderElection.Enabled {
		return r.lead(ctx)
	}
	return r.campaign(ctx)
}

// campaign runs leader election until ctx ends. A lost lease ends the term
// and the replica campaigns again; the term's workers have stopped before
// the lease is released, so two replicas never publish at once while both
// are healthy.
func (r *Router) campaign(ctx context.Context) error {
	le := r.cfg.LeaderElection
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: le.Namespace, Name: le.Name},
		Client:     r.deps.Kube.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: le.Identity},
	}
	for ctx.Err() == nil {
		// The elector's context is not ctx: it is cancelled only once the
		// term's workers are done, so the lease is released (and a standby
		// takes over) only after this replica's last publish.
		elCtx, elCancel := context.WithCancel(context.WithoutCancel(ctx))
		terms := make(chan context.Context, 1)
		elector, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock:            lock,
			LeaseDuration:   le.LeaseDuration,
			RenewDeadline:   le.RenewDeadline,
			RetryPeriod:     le.RetryPeriod,
			ReleaseOnCancel: true,
			Name:            le.Name,
			Callbacks: leaderelection.LeaderCallbacks{
				// The term runs in campaign's goroutine, not the elector's,
				// so campaign knows when it has ended.
				OnStartedLeading: func(termCtx context.Context) { terms <- termCtx },
				OnStoppedLeading: func() {},
				OnNewLeader: func(id string) {
					if id != le.Identity {
						r.log.Info("leader elected", "leader", id)
					}
				},
			},
		})
		if err != nil {
			elCancel()
			return fmt.Errorf("leader election: %w", err)
		}
		electorDone := make(chan struct{})
		go func() {
			defer close(electorDone)
			elector.Run(elCtx)
		}()
		var termErr error
		select {
		case termCtx := <-terms:
			r.log.Info("became leader", "identity", le.Identity)
			leadCtx, cancel := context.WithCancel(termCtx)
			unlink := context.AfterFunc(ctx, cancel)
			termErr = r.lead(leadCtx)
			unlink()
			cancel()
		case <-electorDone:
		case <-ctx.Done():
		}
		elCancel()
		<-electorDone
		if termErr != nil {
			return termErr
		}
		if ctx.Err() == nil {
			r.log.Warn("leadership lost; campaigning again")
		}
	}
	return nil
}

// lead is one leadership term: load what the stream holds, reconcile every
// capture, consume status, until ctx ends. It returns an error only for a
// problem that retrying cannot fix.
func (r *Router) lead(ctx context.Context) error {
	cons, err := r.prepareTerm(ctx)
	if err != nil || ctx.Err() != nil {
		return err
	}
	limiter := func() workqueue.TypedRateLimiter[captureKey] {
		return workqueue.NewTypedItemExponentialFailureRateLimiter[captureKey](r.cfg.RetryBaseDelay, r.cfg.RetryMaxDelay)
	}
	queue := workqueue.NewTypedRateLimitingQueueWithConfig(limiter(),
		workqueue.TypedRateLimitingQueueConfig[captureKey]{Name: "capstream-router"})
	statusQueue := workqueue.NewTypedRateLimitingQueueWithConfig(limiter(),
		workqueue.TypedRateLimitingQueueConfig[captureKey]{Name: "capstream-router-status"})
	r.mu.Lock()
	r.queue, r.statusQueue = queue, statusQueue
	r.mu.Unlock()
	r.leading.Store(true)
	r.metrics.leader.Set(1)
	defer func() {
		r.mu.Lock()
		r.queue, r.statusQueue = nil, nil
		r.mu.Unlock()
		r.book.reset()
		r.leading.Store(false)
		r.metrics.leader.Set(0)
	}()

	// A full pass: every capture the API server has, and every capture the
	// stream has commands for, which covers deletions missed while this
	// replica was not leading.
	for _, k := range r.listCaptures() {
		queue.Add(k)
	}
	for _, k := range r.pub.captures() {
		if r.inScope(k.Namespace) {
			queue.Add(k)
		}
	}

	var wg sync.WaitGroup
	for range r.cfg.Workers {
		wg.Go(func() { r.work(ctx, queue, r.reconcile) })
	}
	wg.Go(func() {
		r.work(ctx, statusQueue, func(ctx context.Context, k captureKey) (time.Duration, error) {
			return 0, r.writeStatus(ctx, k)
		})
	})
	if r.cfg.ResyncPeriod > 0 {
		wg.Go(func() { r.reloadCommands(ctx, queue) })
	}
	// Bound the bytes in flight well under the client's 64 MiB slow
	// consumer limit; reports are small.
	cc, err := cons.Consume(r.onStatus, jetstream.PullMaxBytes(8<<20))
	if err != nil {
		queue.ShutDown()
		statusQueue.ShutDown()
		wg.Wait()
		return fmt.Errorf("consume status: %w", err)
	}
	r.log.Info("leading: publishing commands and writing status")
	<-ctx.Done()

	// Stop pulling first; reports not yet written are redelivered to the
	// next leader after their ack wait.
	cc.Drain()
	select {
	case <-cc.Closed():
	case <-time.After(r.cfg.GracePeriod):
	}
	queue.ShutDown()
	statusQueue.ShutDown()
	wg.Wait()
	r.log.Info("leadership term ended")
	return nil
}

// reloadCommands re-reads the commands stream every resync period and
// reconciles the captures whose commands changed behind the router's back
// (a purged stream, a lost store), which comparing against memory alone
// would never notice.
func (r *Router) reloadCommands(ctx context.Context, queue workqueue.TypedRateLimitingInterface[captureKey]) {
	tick := time.NewTicker(r.cfg.ResyncPeriod)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		changed, err := r.pub.load(ctx)
		if err != nil {
			if ctx.Err() == nil {
				r.log.Warn("reload commands", "error", err)
			}
			continue
		}
		for _, k := range changed {
			if r.inScope(k.Namespace) {
				queue.Add(k)
			}
		}
	}
}

// prepareTerm creates the streams, loads the published commands and binds
// the status consumer, retrying with backoff while NATS is unavailable: a
// leader without NATS keeps the lease and waits rather than flapping.
func (r *Router) prepareTerm(ctx context.Context) (jetstream.Consumer, error) {
	delay := r.cfg.RetryBaseDelay
	for {
		cons, err := func() (jetstream.Consumer, error) {
			actx, cancel := context.WithTimeout(ctx, r.cfg.StartupTimeout)
			defer cancel()
			streams := []jetstream.StreamConfig{schemas.CommandsStream(), schemas.StatusStream()}
			if r.cfg.PacketsStream.Manage {
				streams = append(streams, schemas.PacketsStream(r.cfg.PacketsStream.Limits()))
			}
			for _, sc := range streams {
				if _, err := r.deps.JetStream.CreateOrUpdateStream(actx, sc); err != nil {
					return nil, fmt.Errorf("ensure stream %s: %w", sc.Name, err)
				}
			}
			if r.cfg.PacketsStream.Manage {
				if err := ensureSinkConsumers(actx, r.deps.JetStream); err != nil {
					return nil, err
				}
			}
			if _, err := r.pub.load(actx); err != nil {
				return nil, err
			}
			cons, err := r.deps.JetStream.CreateOrUpdateConsumer(actx, schemas.StreamStatus, schemas.RouterStatusConsumer())
			if err != nil {
				return nil, fmt.Errorf("bind status consumer: %w", err)
			}
			return cons, nil
		}()
		if err == nil {
			return cons, nil
		}
		if ctx.Err() != nil {
			return nil, nil
		}
		r.log.Warn("cannot start leading yet; retrying", "error", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return nil, nil
		case <-time.After(delay):
		}
		delay = min(2*delay, r.cfg.RetryMaxDelay)
	}
}

// work processes one queue until it shuts down. fn returning a delay
// schedules the key again then (start and end times).
func (r *Router) work(ctx context.Context, q workqueue.TypedRateLimitingInterface[captureKey],
	fn func(context.Context, captureKey) (time.Duration, error)) {
	for {
		k, shutdown := q.Get()
		if shutdown {
			return
		}
		after, err := fn(ctx, k)
		switch {
		case err != nil && ctx.Err() == nil:
			r.log.Warn("reconcile failed; retrying", "capture", k.String(), "error", err)
			q.AddRateLimited(k)
		case err != nil:
		default:
			q.Forget(k)
			if after > 0 {
				q.AddAfter(k, after)
			}
		}
		q.Done(k)
	}
}

// reconcile brings one capture's commands to its desired state and records
// the view its status is computed from. Not found means deleted: stop it
// everywhere.
func (r *Router) reconcile(ctx context.Context, k captureKey) (time.Duration, error) {
	start := time.Now()
	defer func() { r.metrics.reconcileSeconds.Observe(time.Since(start).Seconds()) }()
	if !r.inScope(k.Namespace) {
		return 0, nil
	}
	now := r.now()
	pc, err := r.capture(k)
	if apierrors.IsNotFound(err) || (err == nil && pc.DeletionTimestamp != nil) {
		r.forget(k)
		if err := r.pub.sync(ctx, k, nil, now); err != nil {
			r.metrics.reconciles.WithLabelValues("error").Inc()
			return 0, err
		}
		r.metrics.reconciles.WithLabelValues("ok").Inc()
		return 0, nil
	}
	if err != nil {
		r.metrics.reconciles.WithLabelValues("error").Inc()
		return 0, err
	}
	if verr := ValidatePacketCapture(pc); verr != nil {
		r.markInvalid(k, pc, verr)
		r.book.setView(k, &view{uid: string(pc.UID), generation: pc.Generation, invalid: verr.Error()})
		r.enqueueStatus(k, 0)
		// An invalid spec captures nothing: what it captured before stops.
		if err := r.pub.sync(ctx, k, nil, now); err != nil {
			r.metrics.reconciles.WithLabelValues("error").Inc()
			return 0, err
		}
		r.metrics.reconciles.WithLabelValues("invalid").Inc()
		return 0, nil
	}
	r.markValid(k)
	sel, _ := r.selectorFor(k, pc.Spec.Selector) // valid: checked above
	ns, err := r.namespaces.Get(pc.Namespace)
	if err != nil && !apierrors.IsNotFound(err) {
		return 0, err
	}
	pods, err := r.pods.Pods(pc.Namespace).List(labels.Everything())
	if err != nil {
		return 0, err
	}
	d := Decide(pc, sel, ns, pods, r.cfg, now)
	nodes := make([]string, 0, len(d.Commands))
	for n := range d.Commands {
		nodes = append(nodes, n)
	}
	slices.Sort(nodes)
	r.book.setView(k, &view{uid: string(pc.UID), generation: pc.Generation, phase: d.Phase, nodes: nodes, endpoints: d.Endpoints})
	r.enqueueStatus(k, 0)
	if err := r.pub.sync(ctx, k, d.Commands, now); err != nil {
		r.metrics.reconciles.WithLabelValues("error").Inc()
		return 0, err
	}
	r.metrics.reconciles.WithLabelValues("ok").Inc()
	if d.RequeueAfter > 0 {
		// A little late rather than early, so the next pass sees the new
		// phase instead of scheduling itself again for a few nanoseconds.
		return d.RequeueAfter + 10*time.Millisecond, nil
	}
	return 0, nil
}

// markInvalid sets the gauge and emits one Event per (UID, generation).
func (r *Router) markInvalid(k captureKey, pc *v3.PacketCapture, err error) {
	id := fmt.Sprintf("%s/%d", pc.UID, pc.Generation)
	r.mu.Lock()
	first := r.reported[k] != id
	r.reported[k] = id
	r.invalid[k] = true
	r.metrics.invalidCaptures.Set(float64(len(r.invalid)))
	r.mu.Unlock()
	if first {
		r.log.Warn("invalid PacketCapture", "capture", k.String(), "error", err)
		r.recorder.Eventf(pc, corev1.EventTypeWarning, ReasonInvalidSpec, "invalid spec, nothing is captured: %v", err)
	}
}

func (r *Router) markValid(k captureKey) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.reported, k)
	delete(r.invalid, k)
	r.metrics.invalidCaptures.Set(float64(len(r.invalid)))
}

// forget drops a deleted capture's cached state.
func (r *Router) forget(k captureKey) {
	r.mu.Lock()
	delete(r.selectors, k)
	delete(r.reported, k)
	delete(r.invalid, k)
	r.metrics.invalidCaptures.Set(float64(len(r.invalid)))
	r.mu.Unlock()
	r.book.forget(k)
}

// inScope reports whether the router is in charge of a namespace.
func (r *Router) inScope(namespace string) bool {
	return r.cfg.Namespace == "" || r.cfg.Namespace == namespace
}

// capture returns the typed capture from the informer cache.
func (r *Router) capture(k captureKey) (*v3.PacketCapture, error) {
	obj, err := r.captures.ByNamespace(k.Namespace).Get(k.Name)
	if err != nil {
		return nil, err
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return nil, fmt.Errorf("capture %s: unexpected %T in cache", k, obj)
	}
	return fromUnstructured(u)
}

func (r *Router) listCaptures() []captureKey {
	objs, err := r.captures.List(labels.Everything())
	if err != nil {
		return nil
	}
	keys := make([]captureKey, 0, len(objs))
	for _, o := range objs {
		if m, err := meta.Accessor(o); err == nil {
			keys = append(keys, captureKey{m.GetNamespace(), m.GetName()})
		}
	}
	return keys
}

// selectorFor returns the parsed selector of a capture, parsing only when
// the text changed since the last call.
func (r *Router) selectorFor(k captureKey, text string) (*selector.Selector, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if p, ok := r.selectors[k]; ok && p.text == text {
		return p.sel, p.err
	}
	sel, err := selector.Parse(text)
	r.selectors[k] = parsedSelector{text: text, sel: sel, err: err}
	return sel, err
}

func (r *Router) enqueue(k captureKey) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.queue != nil {
		r.queue.Add(k)
	}
}

func (r *Router) enqueueStatus(k captureKey, after time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.statusQueue != nil {
		r.statusQueue.AddAfter(k, after)
	}
}

// ensureSinkConsumers creates the sinks' durable consumers if they do not
// exist, so batches are retained from the first publish even before a sink
// has started. An existing consumer is left as it is: the sinks own its
// settings (their ack wait, for one) and bind it themselves.
func ensureSinkConsumers(ctx context.Context, js jetstream.JetStream) error {
	for _, cc := range []jetstream.ConsumerConfig{schemas.PcapSinkConsumer(), schemas.FlowSinkConsumer()} {
		if _, err := js.Consumer(ctx, schemas.StreamPackets, cc.Durable); err == nil {
			continue
		} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("look up consumer %s: %w", cc.Durable, err)
		}
		if _, err := js.CreateConsumer(ctx, schemas.StreamPackets, cc); err != nil && !errors.Is(err, jetstream.ErrConsumerExists) {
			return fmt.Errorf("create consumer %s: %w", cc.Durable, err)
		}
	}
	return nil
}
