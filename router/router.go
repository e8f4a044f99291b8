package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/capstream/capstream/router/selector"
	v3 "github.com/capstream/capstream/schemas/v3"
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

	// Set by Run before the informers start. pods is the pod cache with
	// its namespace and endpoint label indexes (candidates.go).
	pods       cache.Indexer
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
	pub := newPublisher(deps.JetStream, m)
	pub.stopTTL = cfg.StopTTL
	return &Router{
		cfg:       cfg,
		deps:      deps,
		log:       deps.Logger.With("component", "router"),
		metrics:   m,
		pub:       pub,
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
		informers.WithTransform(slimObject), informers.WithNamespace(scope))
	// Namespaces are cluster-scoped: a scoped router watches its own only.
	nsInformers := informers.NewSharedInformerFactoryWithOptions(r.deps.Kube, r.cfg.ResyncPeriod,
		informers.WithTransform(slimObject), informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			if r.cfg.Namespace != "" {
				o.FieldSelector = "metadata.name=" + r.cfg.Namespace
			}
		}))
	pcInformers := dynamicinformer.NewFilteredDynamicSharedInformerFactory(r.deps.Dynamic, r.cfg.ResyncPeriod, scope, nil)
	podInf := kubeInformers.Core().V1().Pods()
	nsInf := nsInformers.Core().V1().Namespaces()
	pcInf := pcInformers.ForResource(v3.Resource)
	// Captures are few and the reconcile reads their spec and status.
	if err := pcInf.Informer().SetTransform(stripManagedFields); err != nil {
		return fmt.Errorf("capture informer: %w", err)
	}
	if err := podInf.Informer().AddIndexers(podIndexers); err != nil {
		return fmt.Errorf("pod informer: %w", err)
	}
	r.pods, r.namespaces, r.captures = podInf.Informer().GetIndexer(), nsInf.Lister(), pcInf.Lister()
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
