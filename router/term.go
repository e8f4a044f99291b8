package router

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/util/workqueue"

	"github.com/capstream/capstream/schemas"
)

// This file is the leadership side of Run: the campaign for the Lease and
// what one term does (set up the streams, replay the commands stream, run
// the workqueues and the status consumer, and stop them before the Lease
// is released).

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
	wg.Go(func() { r.expireStops(ctx) })
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
	every(ctx, r.cfg.ResyncPeriod, func() {
		changed, err := r.pub.load(ctx)
		if err != nil {
			if ctx.Err() == nil {
				r.log.Warn("reload commands", "error", err)
			}
			return
		}
		for _, k := range changed {
			if r.inScope(k.Namespace) {
				queue.Add(k)
			}
		}
	})
}

// expireStops forgets, a few times per stop TTL (at most every minute, at
// least every second), the stops the server has removed, so the published
// commands the router holds shrink back to the live subjects between
// reloads. A deleted capture whose stops expired then has no state left in
// the router, and no later pass republishes its stops: a producer that
// missed them finds its subject empty when it resyncs and stops.
func (r *Router) expireStops(ctx context.Context) {
	every(ctx, min(max(r.cfg.StopTTL/4, time.Second), time.Minute), func() {
		if n := r.pub.expire(time.Now()); n > 0 {
			r.log.Debug("forgot expired stop commands", "count", n)
		}
	})
}

// every calls fn every d until ctx ends.
func every(ctx context.Context, d time.Duration, fn func()) {
	tick := time.NewTicker(d)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		fn()
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
			streams := []jetstream.StreamConfig{
				schemas.Replicated(schemas.CommandsStream(), r.cfg.CommandsStream.Replicas),
				schemas.Replicated(schemas.StatusStream(), r.cfg.StatusStream.Replicas),
			}
			if r.cfg.PacketsStream.Manage {
				streams = append(streams, schemas.PacketsStream(r.cfg.PacketsStream.Limits()))
			}
			for _, sc := range streams {
				if err := request(actx, func(ctx context.Context) error { return schemas.EnsureStream(ctx, r.deps.JetStream, sc) }); err != nil {
					return nil, err
				}
			}
			if r.cfg.PacketsStream.Manage {
				if err := request(actx, func(ctx context.Context) error { return ensureSinkConsumers(ctx, r.deps.JetStream) }); err != nil {
					return nil, err
				}
			}
			if _, err := r.pub.load(actx); err != nil {
				return nil, err
			}
			var cons jetstream.Consumer
			err := request(actx, func(ctx context.Context) (err error) {
				cons, err = r.deps.JetStream.CreateOrUpdateConsumer(ctx, schemas.StreamStatus, schemas.RouterStatusConsumer())
				return err
			})
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

// termRequestTimeout bounds each JetStream API step of a term's start,
// as the client's default request timeout (5s) would without a context
// deadline: in a cluster a request that reaches a member as it dies, or
// comes while a meta or stream leader is elected, is never answered, and
// the attempt is then retried with backoff rather than after a whole
// startupTimeout.
const termRequestTimeout = 5 * time.Second

// request runs one API step under termRequestTimeout.
func request(ctx context.Context, fn func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, termRequestTimeout)
	defer cancel()
	return fn(ctx)
}

// ensureSinkConsumers creates the sinks' durable consumers, one per
// partition of the packets stream, if they do not exist, so batches are
// retained from the first publish even before a sink has started. An
// existing consumer is left as it is: the sinks own its settings (their
// ack wait, for one) and bind it themselves.
func ensureSinkConsumers(ctx context.Context, js jetstream.JetStream) error {
	st, err := js.Stream(ctx, schemas.StreamPackets)
	if err != nil {
		return fmt.Errorf("look up stream %s: %w", schemas.StreamPackets, err)
	}
	n, err := schemas.PacketPartitions(st.CachedInfo().Config)
	if err != nil {
		return err
	}
	for _, tmpl := range []jetstream.ConsumerConfig{schemas.PcapSinkConsumer(), schemas.FlowSinkConsumer()} {
		for p := range n {
			cc := schemas.SinkPartitionConsumer(tmpl, p)
			if _, err := st.Consumer(ctx, cc.Durable); err == nil {
				continue
			} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
				return fmt.Errorf("look up consumer %s: %w", cc.Durable, err)
			}
			if _, err := st.CreateConsumer(ctx, cc); err != nil && !errors.Is(err, jetstream.ErrConsumerExists) {
				return fmt.Errorf("create consumer %s: %w", cc.Durable, err)
			}
		}
	}
	return nil
}
