package router

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/capstream/capstream/router/selector"
)

// A reconcile evaluates the capture's selector only on the pods that can
// match it: the pod cache has an index of the endpoints' labels, and the
// selector's requirements (selector.Requirements: the k == "v", k in {...}
// and has(k) it cannot match without) pick the index entries to read. The
// index only narrows: Decide still evaluates the whole selector on every
// candidate, so the decision is the one the full namespace list gives.

// podLabelIndex is the name of the pod cache's endpoint label index. Its
// entries are, for every endpoint (IsEndpoint), its namespace and each
// key, and each key with its value, of the endpoint labels the pod alone
// determines: EndpointLabels without the namespace's labels, and without
// projectcalico.org/namespace and projectcalico.org/orchestrator, which
// every endpoint of a namespace has with the same value.
const podLabelIndex = "capstream-endpoint-labels"

// podIndexers are the indexers the router adds to the pod informer.
var podIndexers = cache.Indexers{podLabelIndex: podLabelIndexFunc}

// smallCandidates is the candidate count below which a reconcile stops
// looking for a smaller set among the remaining requirements.
const smallCandidates = 64

// labelIndexKey is the index entry of an endpoint label; hasIndexKey that
// of the label's presence. Label keys hold no NUL, so the two never meet
// (and if they did, a lookup would only return more candidates).
func labelIndexKey(namespace, key, value string) string {
	return namespace + "\x00" + key + "\x00" + value
}

func hasIndexKey(namespace, key string) string {
	return namespace + "\x00" + key
}

func podLabelIndexFunc(obj any) ([]string, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return nil, fmt.Errorf("pod label index: unexpected %T", obj)
	}
	if !IsEndpoint(pod) {
		return nil, nil
	}
	l := EndpointLabels(pod, nil)
	out := make([]string, 0, 2*len(l))
	for k, v := range l {
		if k == LabelNamespace || k == LabelOrchestrator {
			continue
		}
		out = append(out, hasIndexKey(pod.Namespace, k), labelIndexKey(pod.Namespace, k, v))
	}
	return out, nil
}

// candidatePods returns the pods of a namespace that can match sel, given
// the namespace object Decide will be called with: every endpoint that
// matches is among them. Without a usable requirement it is every pod of
// the namespace. narrowed reports whether the index was used.
//
// Like a List, it reads the cache as it is now; several lookups are not one
// snapshot, but a pod that changes between them enqueues its captures
// again, so the next reconcile sees it.
func candidatePods(idx cache.Indexer, namespace string, ns *corev1.Namespace, sel *selector.Selector) (pods []*corev1.Pod, narrowed bool, err error) {
	var best []any
	found := false
	for _, req := range usableRequirements(namespace, ns, sel) {
		if !req.AnyValue && len(req.Values) == 0 {
			// Nothing can match.
			return nil, true, nil
		}
		var objs []any
		if req.AnyValue {
			objs, err = idx.ByIndex(podLabelIndex, hasIndexKey(namespace, req.Key))
		} else {
			// An endpoint has one value per key: the lookups are disjoint.
			for _, v := range req.Values {
				var more []any
				more, err = idx.ByIndex(podLabelIndex, labelIndexKey(namespace, req.Key, v))
				if err != nil {
					break
				}
				objs = append(objs, more...)
			}
		}
		if err != nil {
			return nil, false, fmt.Errorf("pod label index: %w", err)
		}
		if !found || len(objs) < len(best) {
			best, found = objs, true
		}
		if len(best) <= smallCandidates {
			break
		}
	}
	if !found {
		pods, err := corelisters.NewPodLister(idx).Pods(namespace).List(labels.Everything())
		return pods, false, err
	}
	pods = make([]*corev1.Pod, 0, len(best))
	for _, o := range best {
		if p, ok := o.(*corev1.Pod); ok {
			pods = append(pods, p)
		}
	}
	return pods, true, nil
}

// usableRequirements returns the requirements of sel that the index can
// answer, most selective first (one value before several, values before
// presence), or a single impossible one when a label every endpoint of the
// namespace has with the same value already rules the selector out.
func usableRequirements(namespace string, ns *corev1.Namespace, sel *selector.Selector) []selector.Requirement {
	if sel == nil {
		return nil
	}
	var out []selector.Requirement
	for _, req := range sel.Requirements() {
		switch {
		case req.Key == LabelNamespace || req.Key == LabelOrchestrator:
			v := namespace
			if req.Key == LabelOrchestrator {
				v = orchestratorK8s
			}
			if !req.AnyValue && !slices.Contains(req.Values, v) {
				return []selector.Requirement{{Key: req.Key, Values: []string{}}}
			}
			// Met by every endpoint: no narrowing.
		case strings.HasPrefix(req.Key, NamespaceLabelPrefix) && ns != nil && hasLabel(ns, strings.TrimPrefix(req.Key, NamespaceLabelPrefix)):
			// The namespace gives this label to every endpoint that does
			// not carry it itself: the index does not know them.
		default:
			out = append(out, req)
		}
	}
	slices.SortStableFunc(out, func(a, b selector.Requirement) int {
		if a.AnyValue != b.AnyValue {
			if a.AnyValue {
				return 1
			}
			return -1
		}
		return cmp.Compare(len(a.Values), len(b.Values))
	})
	return out
}

func hasLabel(ns *corev1.Namespace, key string) bool {
	_, ok := ns.Labels[key]
	return ok
}
