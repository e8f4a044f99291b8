package main

// The churn phase's create/delete cycles and the producer's reports they
// wait for (churn.go).

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/sync/errgroup"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/capstream/capstream/schemas"
	v3 "github.com/capstream/capstream/schemas/v3"
)

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
	return e.kubeClients.createCapture(ctx, e.ns, name, "app == 'churn'")
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
