package router

import (
	"fmt"
	"math/rand/v2"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/capstream/capstream/router/selector"
	v3 "github.com/capstream/capstream/schemas/v3"
)

// scaleCluster is issue 14's cluster as bench -router-scale builds it: one
// namespace, pods spread over nodes with app (about 50 pods each), tier and
// version labels, and captures selecting tier == 'db' (every 50th),
// app && version (a third) or app alone.
type scaleCluster struct {
	ns       *corev1.Namespace
	pods     []*corev1.Pod
	captures []*v3.PacketCapture
	sels     []*selector.Selector
}

func newScaleCluster(nodes, pods, captures int) *scaleCluster {
	rng := rand.New(rand.NewPCG(14, 3))
	apps := max(pods/50, 4)
	sc := &scaleCluster{ns: &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "scale", Labels: map[string]string{"bench": "router-scale"}}}}
	tiers := []string{"web", "api", "db"}
	for j := range pods {
		sc.pods = append(sc.pods, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("pod-%05d", j), Namespace: "scale", Labels: map[string]string{
				"app": fmt.Sprintf("app-%d", rng.IntN(apps)), "tier": tiers[rng.IntN(len(tiers))],
				"version": []string{"v1", "v2"}[rng.IntN(2)], "pod-template-hash": "7d9f8c6b5",
			}},
			Spec:   corev1.PodSpec{NodeName: fmt.Sprintf("node-%04d", j%nodes), ServiceAccountName: "default"},
			Status: corev1.PodStatus{Phase: corev1.PodRunning},
		})
	}
	for i := range captures {
		app := fmt.Sprintf("app-%d", i%apps)
		sel := fmt.Sprintf("app == '%s'", app)
		switch {
		case i%50 == 0:
			sel = "tier == 'db'"
		case i%3 == 1:
			sel = fmt.Sprintf("app == '%s' && version == 'v2'", app)
		}
		pc := &v3.PacketCapture{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("cap-%03d", i), Namespace: "scale", UID: "u"},
			Spec: v3.PacketCaptureSpec{Selector: sel}}
		sc.captures = append(sc.captures, pc)
		sc.sels = append(sc.sels, selector.MustParse(sel))
	}
	return sc
}

// podCache is the pod cache as the router's informer keeps it: with the
// namespace index and, if labelIndex is set, the endpoint label index.
func (sc *scaleCluster) podCache(tb testing.TB, labelIndex bool) cache.Indexer {
	indexers := cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc}
	if labelIndex {
		indexers[podLabelIndex] = podLabelIndexFunc
	}
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, indexers)
	for _, p := range sc.pods {
		if err := idx.Add(p); err != nil {
			tb.Fatal(err)
		}
	}
	return idx
}

// BenchmarkReconcileScale is one pass over every capture of issue 14's
// cluster (20,000 pods on 1000 nodes, 500 captures): each reconcile's pod
// lookup and Decide, without publishing. list is the namespace listing
// reconciles did before the label index (and still do for a selector
// without requirements), index the candidates of the index.
func BenchmarkReconcileScale(b *testing.B) {
	sc := newScaleCluster(1000, 20000, 500)
	cfg := DefaultConfig()
	for _, bc := range []struct {
		name  string
		pods  func(idx cache.Indexer, sel *selector.Selector) ([]*corev1.Pod, error)
		index bool
	}{
		{"list", func(idx cache.Indexer, _ *selector.Selector) ([]*corev1.Pod, error) {
			return corelisters.NewPodLister(idx).Pods("scale").List(labels.Everything())
		}, false},
		{"index", func(idx cache.Indexer, sel *selector.Selector) ([]*corev1.Pod, error) {
			pods, _, err := candidatePods(idx, "scale", sc.ns, sel)
			return pods, err
		}, true},
	} {
		idx := sc.podCache(b, bc.index)
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				for i, pc := range sc.captures {
					pods, err := bc.pods(idx, sc.sels[i])
					if err != nil {
						b.Fatal(err)
					}
					Decide(pc, sc.sels[i], sc.ns, pods, cfg, t0)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/float64(len(sc.captures)), "us/reconcile")
		})
	}
}
