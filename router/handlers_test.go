package router

import (
	"slices"
	"testing"

	v3 "github.com/capstream/capstream/schemas/v3"
	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// handlerRouter is a Router with in-memory caches and a queue, enough to
// drive the informer handlers.
func handlerRouter(t *testing.T, selectors map[string]string) *Router {
	t.Helper()
	pcs := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	for name, sel := range selectors {
		u := &unstructured.Unstructured{Object: map[string]any{"spec": map[string]any{"selector": sel}}}
		u.SetNamespace("ns")
		u.SetName(name)
		if err := pcs.Add(u); err != nil {
			t.Fatal(err)
		}
	}
	nss := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	if err := nss.Add(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ns", Labels: map[string]string{"team": "a"}}}); err != nil {
		t.Fatal(err)
	}
	r := &Router{
		book:       newBook(),
		selectors:  map[captureKey]parsedSelector{},
		captures:   cache.NewGenericLister(pcs, v3.Resource.GroupResource()),
		namespaces: corelisters.NewNamespaceLister(nss),
		queue:      workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[captureKey]()),
	}
	t.Cleanup(r.queue.ShutDown)
	return r
}

func drain(r *Router) []string {
	var out []string
	for r.queue.Len() > 0 {
		k, _ := r.queue.Get()
		out = append(out, k.Name)
		r.queue.Done(k)
	}
	slices.Sort(out)
	return out
}

func TestPodHandlerTargetsAffectedCaptures(t *testing.T) {
	selectors := map[string]string{
		"web":    `app == "web"`,
		"db":     `app == "db"`,
		"team-a": `pcns.team == "a"`,
		"bad":    `app ==`,
	}
	mk := func(rv string, labels map[string]string, mods ...func(*corev1.Pod)) *corev1.Pod {
		p := pod("p", "n", labels, mods...)
		p.Namespace, p.ResourceVersion = "ns", rv
		return p
	}
	web, db := map[string]string{"app": "web"}, map[string]string{"app": "db"}
	cases := map[string]struct {
		old, new *corev1.Pod
		want     []string
	}{
		"add":                 {nil, mk("1", web), []string{"team-a", "web"}},
		"relabel":             {mk("1", web), mk("2", db), []string{"db", "team-a", "web"}},
		"delete":              {mk("1", db), nil, []string{"db", "team-a"}},
		"annotation only":     {mk("1", web), mk("2", web, func(p *corev1.Pod) { p.Annotations = map[string]string{"x": "y"} }), nil},
		"resync":              {mk("1", web), mk("1", web), nil},
		"not an endpoint":     {nil, mk("1", web, func(p *corev1.Pod) { p.Spec.HostNetwork = true }), nil},
		"stops running":       {mk("1", web), mk("2", web, func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }), []string{"team-a", "web"}},
		"scheduled to a node": {mk("1", db, func(p *corev1.Pod) { p.Spec.NodeName = "" }), mk("2", db), []string{"db", "team-a"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			r := handlerRouter(t, selectors)
			r.onPod(tc.old, tc.new)
			if diff := cmp.Diff(tc.want, drain(r)); diff != "" {
				t.Errorf("enqueued (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNamespaceHandlerTargetsAffectedCaptures(t *testing.T) {
	selectors := map[string]string{
		"team":    `pcns.team == "a"`,
		"no-team": `!has(pcns.team)`,
		"env":     `pcns.env in {"prod"}`,
		"pod":     `app == "web"`,
		"active":  `app == "db"`,
	}
	ns := func(rv string, labels map[string]string) *corev1.Namespace {
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ns", ResourceVersion: rv, Labels: labels}}
	}
	cases := map[string]struct {
		old, new *corev1.Namespace
		want     []string
	}{
		"team changes":     {ns("1", map[string]string{"team": "a"}), ns("2", map[string]string{"team": "b"}), []string{"active", "no-team", "team"}},
		"env added":        {ns("1", nil), ns("2", map[string]string{"env": "prod"}), []string{"active", "env"}},
		"unrelated label":  {ns("1", nil), ns("2", map[string]string{"other": "x"}), []string{"active"}},
		"resync":           {ns("1", nil), ns("1", nil), nil},
		"namespace create": {nil, ns("1", nil), []string{"active", "env", "no-team", "pod", "team"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			r := handlerRouter(t, selectors)
			// "active" has endpoints: its commands carry pcns. labels.
			r.book.setView(captureKey{"ns", "active"}, &view{nodes: []string{"n"}, endpoints: 1})
			r.onNamespace(tc.old, tc.new)
			if diff := cmp.Diff(tc.want, drain(r)); diff != "" {
				t.Errorf("enqueued (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCaptureHandlerIgnoresStatusWrites(t *testing.T) {
	mk := func(rv string, gen int64) *unstructured.Unstructured {
		u := &unstructured.Unstructured{Object: map[string]any{}}
		u.SetNamespace("ns")
		u.SetName("c")
		u.SetResourceVersion(rv)
		u.SetGeneration(gen)
		return u
	}
	r := handlerRouter(t, nil)
	r.onCapture(mk("1", 1), mk("2", 1)) // a status write
	if got := drain(r); len(got) != 0 {
		t.Errorf("status write enqueued %v", got)
	}
	r.onCapture(mk("2", 1), mk("3", 2)) // a spec change
	r.onCapture(mk("3", 2), mk("3", 2)) // a resync
	if got := drain(r); !slices.Equal(got, []string{"c"}) {
		t.Errorf("spec change and resync enqueued %v", got)
	}
}
