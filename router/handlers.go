package router

import (
	"fmt"
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"
)

// The informer handlers translate changes into the captures they affect.
// They run on the informers' goroutines on every replica, cost no API call,
// and enqueue only while leading.

// addHandlers registers the three informers' handlers.
func (r *Router) addHandlers(pods, namespaces, captures cache.SharedIndexInformer) error {
	if _, err := captures.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { r.onCapture(nil, obj) },
		UpdateFunc: func(old, obj any) {
			r.onCapture(old, obj)
		},
		DeleteFunc: func(obj any) { r.onCapture(nil, obj) },
	}); err != nil {
		return fmt.Errorf("capture handler: %w", err)
	}
	if _, err := pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { r.onPod(nil, asPod(obj)) },
		UpdateFunc: func(old, obj any) { r.onPod(asPod(old), asPod(obj)) },
		DeleteFunc: func(obj any) { r.onPod(asPod(obj), nil) },
	}); err != nil {
		return fmt.Errorf("pod handler: %w", err)
	}
	if _, err := namespaces.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { r.onNamespace(nil, asNamespace(obj)) },
		UpdateFunc: func(old, obj any) { r.onNamespace(asNamespace(old), asNamespace(obj)) },
		DeleteFunc: func(obj any) { r.onNamespace(nil, asNamespace(obj)) },
	}); err != nil {
		return fmt.Errorf("namespace handler: %w", err)
	}
	return nil
}

// onCapture enqueues a capture on creation, deletion, a spec change
// (generation) and resync. Status writes, the router's own included, change
// neither the generation nor anything else the reconcile reads, so they are
// ignored: that is what keeps status write-back from looping.
func (r *Router) onCapture(old, obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	m, err := meta.Accessor(obj)
	if err != nil {
		return
	}
	if old != nil {
		o, err := meta.Accessor(old)
		if err == nil && o.GetResourceVersion() != m.GetResourceVersion() &&
			o.GetGeneration() == m.GetGeneration() && o.GetUID() == m.GetUID() &&
			(o.GetDeletionTimestamp() == nil) == (m.GetDeletionTimestamp() == nil) {
			return
		}
	}
	r.enqueue(captureKey{m.GetNamespace(), m.GetName()})
}

// onPod enqueues the captures of the pod's namespace whose selector matches
// the pod's endpoint before or after the change: exactly the captures whose
// endpoint list can have changed.
func (r *Router) onPod(old, pod *corev1.Pod) {
	if old != nil && pod != nil {
		if old.ResourceVersion == pod.ResourceVersion {
			return // resync: the capture resync covers it
		}
		if !endpointChanged(old, pod) {
			return // e.g. a status condition or annotation
		}
	}
	ref := pod
	if ref == nil {
		ref = old
	}
	if ref == nil {
		return
	}
	ns, _ := r.namespaces.Get(ref.Namespace)
	var before, after map[string]string
	if old != nil && IsEndpoint(old) {
		before = EndpointLabels(old, ns)
	}
	if pod != nil && IsEndpoint(pod) {
		after = EndpointLabels(pod, ns)
	}
	if before == nil && after == nil {
		return
	}
	for _, k := range r.capturesIn(ref.Namespace) {
		sel, err := r.selectorFor(k.key, k.text)
		if err != nil {
			continue
		}
		if (before != nil && sel.Evaluate(before)) || (after != nil && sel.Evaluate(after)) {
			r.enqueue(k.key)
		}
	}
}

// endpointChanged reports whether anything the endpoint is made of changed.
func endpointChanged(a, b *corev1.Pod) bool {
	return IsEndpoint(a) != IsEndpoint(b) || a.Spec.NodeName != b.Spec.NodeName ||
		a.Spec.ServiceAccountName != b.Spec.ServiceAccountName || !maps.Equal(a.Labels, b.Labels)
}

// onNamespace enqueues the captures of a namespace whose selector reads a
// pcns. label that changed, and those that have endpoints, because their
// commands carry the endpoints' labels, namespace labels included.
// Creation and deletion enqueue all of them.
func (r *Router) onNamespace(old, ns *corev1.Namespace) {
	if ns == nil {
		return
	}
	var changed []string
	if old != nil {
		if old.ResourceVersion == ns.ResourceVersion {
			return
		}
		for k, v := range ns.Labels {
			if ov, ok := old.Labels[k]; !ok || ov != v {
				changed = append(changed, NamespaceLabelPrefix+k)
			}
		}
		for k := range old.Labels {
			if _, ok := ns.Labels[k]; !ok {
				changed = append(changed, NamespaceLabelPrefix+k)
			}
		}
		if len(changed) == 0 {
			return
		}
	}
	for _, k := range r.capturesIn(ns.Name) {
		if old == nil {
			r.enqueue(k.key)
			continue
		}
		sel, err := r.selectorFor(k.key, k.text)
		if err != nil {
			continue
		}
		if r.book.hasEndpoints(k.key) || slices.ContainsFunc(sel.Keys(), func(key string) bool { return slices.Contains(changed, key) }) {
			r.enqueue(k.key)
		}
	}
}

type captureSelector struct {
	key  captureKey
	text string
}

// capturesIn lists the captures of a namespace with their selector text,
// read straight from the cached objects without a full conversion.
func (r *Router) capturesIn(namespace string) []captureSelector {
	if r.captures == nil {
		return nil
	}
	objs, err := r.captures.ByNamespace(namespace).List(labels.Everything())
	if err != nil {
		return nil
	}
	out := make([]captureSelector, 0, len(objs))
	for _, o := range objs {
		m, err := meta.Accessor(o)
		if err != nil {
			continue
		}
		text := ""
		if u, ok := o.(interface{ UnstructuredContent() map[string]any }); ok {
			if spec, ok := u.UnstructuredContent()["spec"].(map[string]any); ok {
				text, _ = spec["selector"].(string)
			}
		}
		out = append(out, captureSelector{key: captureKey{m.GetNamespace(), m.GetName()}, text: text})
	}
	return out
}

func asPod(obj any) *corev1.Pod {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	p, _ := obj.(*corev1.Pod)
	return p
}

func asNamespace(obj any) *corev1.Namespace {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	n, _ := obj.(*corev1.Namespace)
	return n
}

// slimObject is the transform of the pod and namespace informers: it
// keeps of a pod and of a namespace only the fields the router reads, so
// the caches of a large cluster hold a few hundred bytes per pod instead of
// the whole object (containers, env, volumes, annotations, conditions).
// Anything else only loses its managed fields. It is idempotent: the
// informers may pass an object through it again.
//
// What the router reads, and so what is kept: of a pod its name,
// namespace, UID, resource version (resync detection), generation,
// deletion timestamp, labels, spec.nodeName, spec.hostNetwork,
// spec.serviceAccountName, status.phase and status.podIP(s)
// (IsEndpoint, EndpointLabels, endpointChanged, Decide); of a namespace
// its name, UID, resource version, deletion timestamp and labels
// (EndpointLabels, onNamespace).
func slimObject(obj any) (any, error) {
	switch o := obj.(type) {
	case *corev1.Pod:
		return slimPod(o), nil
	case *corev1.Namespace:
		return slimNamespace(o), nil
	}
	return stripManagedFields(obj)
}

func slimMeta(m *metav1.ObjectMeta) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name:              m.Name,
		Namespace:         m.Namespace,
		UID:               m.UID,
		ResourceVersion:   m.ResourceVersion,
		Generation:        m.Generation,
		CreationTimestamp: m.CreationTimestamp,
		DeletionTimestamp: m.DeletionTimestamp,
		Labels:            m.Labels,
	}
}

func slimPod(p *corev1.Pod) *corev1.Pod {
	return &corev1.Pod{
		TypeMeta:   p.TypeMeta,
		ObjectMeta: slimMeta(&p.ObjectMeta),
		Spec: corev1.PodSpec{
			NodeName:           p.Spec.NodeName,
			HostNetwork:        p.Spec.HostNetwork,
			ServiceAccountName: p.Spec.ServiceAccountName,
		},
		Status: corev1.PodStatus{
			Phase:  p.Status.Phase,
			PodIP:  p.Status.PodIP,
			PodIPs: p.Status.PodIPs,
		},
	}
}

func slimNamespace(n *corev1.Namespace) *corev1.Namespace {
	return &corev1.Namespace{TypeMeta: n.TypeMeta, ObjectMeta: slimMeta(&n.ObjectMeta)}
}

// stripManagedFields drops what the router never reads from cached objects,
// to keep the pod cache of a large cluster small.
func stripManagedFields(obj any) (any, error) {
	if m, err := meta.Accessor(obj); err == nil {
		m.SetManagedFields(nil)
	}
	return obj, nil
}
