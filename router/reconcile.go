package router

import (
	"context"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/capstream/capstream/router/selector"
	v3 "github.com/capstream/capstream/schemas/v3"
)

// This file is the I/O side of one capture's reconcile: it reads the
// informer caches, calls the pure Decide of reconciler.go, publishes
// through the publisher and keeps the per-capture state the handlers use
// (parsed selectors, invalid specs already reported).

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
	// Only the pods that can match, not the namespace: see candidates.go.
	pods, narrowed, err := candidatePods(r.pods, pc.Namespace, ns, sel)
	if err != nil {
		return 0, err
	}
	lookup := "list"
	if narrowed {
		lookup = "index"
	}
	r.metrics.reconcilePods.WithLabelValues(lookup).Add(float64(len(pods)))
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
