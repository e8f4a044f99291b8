package main

// The router scale phase's view of the bus: the commands the router
// published, against the model, and the timed label changes
// (router_scale.go).

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/capstream/capstream/schemas"
)

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
func (e *routerScaleEnv) waitFull(ctx context.Context, want map[string][]string, c *proc, timeout time.Duration) (bool, error) {
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
