package router

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/capstream/capstream/router/selector"
	v3 "github.com/capstream/capstream/schemas/v3"
)

// The narrowing is only an optimisation: these tests check that Decide on
// candidatePods gives exactly the Decision of Decide on the namespace's
// whole pod list, for random selectors and pods, with the labels Calico
// derives (namespace labels, service account, namespace and orchestrator)
// in play, and that the check catches a narrowing that drops a pod.

var (
	candKeys = []string{"app", "tier", "canary", LabelServiceAccount, LabelNamespace, LabelOrchestrator,
		NamespaceLabelPrefix + "team", NamespaceLabelPrefix + "env"}
	candValues = []string{"x", "y", "web", "default", "ns-a", "k8s", ""}
)

func candPick[T any](rng *rand.Rand, s []T) T { return s[rng.IntN(len(s))] }

// candSelector draws a selector over the keys and values pods carry.
func candSelector(rng *rand.Rand, depth int) string {
	k, v := candPick(rng, candKeys), `"`+candPick(rng, candValues)+`"`
	set := func() string {
		vs := make([]string, rng.IntN(3))
		for i := range vs {
			vs[i] = `"` + candPick(rng, candValues) + `"`
		}
		return "{" + strings.Join(vs, ", ") + "}"
	}
	c := rng.IntN(12)
	if depth == 0 {
		c %= 8
	}
	switch c {
	case 0:
		return "all()"
	case 1:
		return fmt.Sprintf("has(%s)", k)
	case 2, 3:
		return fmt.Sprintf("%s == %s", k, v)
	case 4:
		return fmt.Sprintf("%s != %s", k, v)
	case 5:
		return fmt.Sprintf("%s in %s", k, set())
	case 6:
		return fmt.Sprintf("%s not in %s", k, set())
	case 7:
		return fmt.Sprintf("%s starts with %s", k, v)
	case 8:
		return "!(" + candSelector(rng, depth-1) + ")"
	case 9:
		return "(" + candSelector(rng, depth-1) + ") || (" + candSelector(rng, depth-1) + ")"
	default:
		return "(" + candSelector(rng, depth-1) + ") && (" + candSelector(rng, depth-1) + ")"
	}
}

// candPod draws a pod of namespace ns, endpoint or not, with its own
// labels on any key, Calico's included.
func candPod(rng *rand.Rand, ns string, i int) *corev1.Pod {
	l := map[string]string{}
	for _, k := range candKeys {
		if rng.IntN(3) == 0 {
			l[k] = candPick(rng, candValues)
		}
	}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%03d", i), Namespace: ns, Labels: l},
		Spec:       corev1.PodSpec{NodeName: fmt.Sprintf("n%d", rng.IntN(4)), ServiceAccountName: candPick(rng, []string{"", "default", "web"})},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
	switch rng.IntN(10) {
	case 0:
		p.Status.Phase = corev1.PodPending
	case 1:
		p.Spec.HostNetwork = true
	case 2:
		p.Spec.NodeName = ""
	}
	return p
}

// candNamespaces are the namespace objects a reconcile may see: with and
// without the labels pcns.* keys name, and not found (nil).
var candNamespaces = []*corev1.Namespace{
	{ObjectMeta: metav1.ObjectMeta{Name: "ns-a", Labels: map[string]string{"team": "x", "env": ""}}},
	{ObjectMeta: metav1.ObjectMeta{Name: "ns-a", Labels: map[string]string{"team": "y"}}},
	{ObjectMeta: metav1.ObjectMeta{Name: "ns-a"}},
	nil,
}

func newPodIndexer(f cache.IndexFunc) cache.Indexer {
	return cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc, podLabelIndex: f})
}

// sameDecision compares Decide on the candidates with Decide on the whole
// namespace for one selector.
func sameDecision(idx cache.Indexer, ns *corev1.Namespace, text string) error {
	sel, err := selector.Parse(text)
	if err != nil {
		return nil
	}
	pc := &v3.PacketCapture{ObjectMeta: metav1.ObjectMeta{Name: "c", Namespace: "ns-a", UID: "u", Generation: 1}, Spec: v3.PacketCaptureSpec{Selector: text}}
	all, err := corelisters.NewPodLister(idx).Pods("ns-a").List(labels.Everything())
	if err != nil {
		return err
	}
	cands, _, err := candidatePods(idx, "ns-a", ns, sel)
	if err != nil {
		return err
	}
	cfg := DefaultConfig()
	if diff := cmp.Diff(Decide(pc, sel, ns, all, cfg, t0), Decide(pc, sel, ns, cands, cfg, t0)); diff != "" {
		return fmt.Errorf("selector %q, namespace %v: narrowed decision differs (-full +narrowed):\n%s", text, ns, diff)
	}
	return nil
}

// checkNarrowing runs sameDecision over random clusters and selectors,
// relabelling pods between rounds so the index is updated, not only built.
func checkNarrowing(seed uint64, rounds int, f cache.IndexFunc) error {
	rng := rand.New(rand.NewPCG(seed, 14))
	idx := newPodIndexer(f)
	for i := range 60 {
		ns := "ns-a"
		if i%5 == 4 {
			ns = "ns-b" // must never be a candidate
		}
		if err := idx.Add(candPod(rng, ns, i)); err != nil {
			return err
		}
	}
	for range rounds {
		for range 5 {
			if err := idx.Update(candPod(rng, "ns-a", rng.IntN(60))); err != nil {
				return err
			}
		}
		text := candSelector(rng, 3)
		for _, ns := range candNamespaces {
			if err := sameDecision(idx, ns, text); err != nil {
				return err
			}
		}
	}
	return nil
}

func TestCandidatePodsSameDecision(t *testing.T) {
	for seed := range uint64(8) {
		if err := checkNarrowing(seed, 300, podLabelIndexFunc); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCandidatePodsCheckCatchesWrongIndex makes sure the test above fails
// when the narrowing loses endpoints: an index that skips some pods, and
// one of the pod's own labels instead of its endpoint's (service account).
func TestCandidatePodsCheckCatchesWrongIndex(t *testing.T) {
	broken := map[string]cache.IndexFunc{
		"drops a pod": func(obj any) ([]string, error) {
			if obj.(*corev1.Pod).Name == "p007" {
				return nil, nil
			}
			return podLabelIndexFunc(obj)
		},
		"pod labels, not endpoint labels": func(obj any) ([]string, error) {
			p := obj.(*corev1.Pod).DeepCopy()
			sa := p.Spec.ServiceAccountName
			p.Spec.ServiceAccountName = ""
			out, err := podLabelIndexFunc(p)
			if sa != "" && p.Labels[LabelServiceAccount] == "" {
				// Keep presence right, lose the value.
				out = append(out, hasIndexKey(p.Namespace, LabelServiceAccount))
			}
			return out, err
		},
	}
	for name, f := range broken {
		t.Run(name, func(t *testing.T) {
			if err := checkNarrowing(1, 2000, f); err == nil {
				t.Fatal("a wrong index went unnoticed")
			}
		})
	}
}

func TestCandidatePodsNarrows(t *testing.T) {
	idx := newPodIndexer(podLabelIndexFunc)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ns-a", Labels: map[string]string{"team": "x"}}}
	for i := range 30 {
		p := pod(fmt.Sprintf("p%02d", i), "n", map[string]string{"app": fmt.Sprintf("a%d", i%10)})
		p.Namespace = "ns-a"
		if err := idx.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	cases := map[string]struct {
		sel      string
		n        int
		narrowed bool
	}{
		"eq":                   {`app == "a1"`, 3, true},
		"in":                   {`app in {"a1", "a2", "zz"}`, 6, true},
		"has":                  {`has(app) && app != "a1"`, 30, true},
		"smallest of and":      {`has(app) && app == "a3"`, 3, true},
		"impossible":           {`app in {}`, 0, true},
		"other namespace":      {`projectcalico.org/namespace == "ns-b" && has(app)`, 0, true},
		"own namespace":        {`projectcalico.org/namespace == "ns-a"`, 30, false},
		"orchestrator":         {`projectcalico.org/orchestrator == "k8s" && app == "a1"`, 3, true},
		"namespace label":      {`pcns.team == "x" && app == "a1"`, 3, true},
		"namespace label only": {`pcns.team == "x"`, 30, false},
		"absent ns label":      {`pcns.other == "x"`, 0, true},
		"service account":      {`projectcalico.org/serviceaccount == "default" && app == "a2"`, 3, true},
		"negation":             {`app != "a1"`, 30, false},
		"or":                   {`app == "a1" || app == "a2"`, 6, true},
		"all":                  {`all()`, 30, false},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			pods, narrowed, err := candidatePods(idx, "ns-a", ns, selector.MustParse(tc.sel))
			if err != nil {
				t.Fatal(err)
			}
			if len(pods) != tc.n || narrowed != tc.narrowed {
				t.Errorf("%d candidates, narrowed %v; want %d, %v", len(pods), narrowed, tc.n, tc.narrowed)
			}
			if err := sameDecision(idx, ns, tc.sel); err != nil {
				t.Error(err)
			}
		})
	}
}

// FuzzCandidatePods checks any accepted selector against a random cluster.
func FuzzCandidatePods(f *testing.F) {
	rng := rand.New(rand.NewPCG(3, 14))
	for range 50 {
		f.Add(candSelector(rng, 3))
	}
	idx := newPodIndexer(podLabelIndexFunc)
	for i := range 80 {
		if err := idx.Add(candPod(rng, "ns-a", i)); err != nil {
			f.Fatal(err)
		}
	}
	f.Fuzz(func(t *testing.T, text string) {
		for _, ns := range candNamespaces {
			if err := sameDecision(idx, ns, text); err != nil {
				t.Fatal(err)
			}
		}
	})
}
