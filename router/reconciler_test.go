package router

import (
	"strings"
	"testing"
	"time"

	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/router/selector"
	"github.com/capstream/capstream/schemas"
	v3 "github.com/capstream/capstream/schemas/v3"
	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

var t0 = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func pod(name, node string, labels map[string]string, mods ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "sample-namespace", Labels: labels},
		Spec:       corev1.PodSpec{NodeName: node, ServiceAccountName: "default"},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
	for _, m := range mods {
		m(p)
	}
	return p
}

func newCapture(sel string, mods ...func(*v3.PacketCapture)) *v3.PacketCapture {
	pc := &v3.PacketCapture{
		ObjectMeta: metav1.ObjectMeta{Name: "sample-capture", Namespace: "sample-namespace", UID: "u-1", Generation: 3},
		Spec:       v3.PacketCaptureSpec{Selector: sel},
	}
	for _, m := range mods {
		m(pc)
	}
	return pc
}

// endpoints summarizes a decision as node -> interfaces.
func endpoints(d Decision) map[string][]string {
	out := map[string][]string{}
	for node, c := range d.Commands {
		for _, e := range c.Endpoints {
			out[node] = append(out[node], e.Interface)
		}
	}
	return out
}

func iface(p string) string { return testenv.CalicoInterfaceName("cali", "sample-namespace", p) }

func TestDecide(t *testing.T) {
	app := map[string]string{"k8s-app": "sample-app"}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "sample-namespace", Labels: map[string]string{"env": "prod"}}}
	tm := func(d time.Duration) *metav1.Time { m := metav1.NewTime(t0.Add(d)); return &m }
	cases := map[string]struct {
		pc      *v3.PacketCapture
		pods    []*corev1.Pod
		want    map[string][]string
		phase   Phase
		requeue time.Duration
	}{
		"seed sample: two matching pods on two nodes, one not": {
			pc: newCapture(`k8s-app == "sample-app"`),
			pods: []*corev1.Pod{
				pod("a", "node-1", app), pod("b", "node.2", app),
				pod("c", "node-1", map[string]string{"k8s-app": "other"}),
			},
			want:  map[string][]string{"node-1": {iface("a")}, "node.2": {iface("b")}},
			phase: PhaseActive,
		},
		"two on one node are sorted": {
			pc:    newCapture(`k8s-app == "sample-app"`),
			pods:  []*corev1.Pod{pod("z", "n", app), pod("a", "n", app)},
			want:  map[string][]string{"n": {iface("a"), iface("z")}},
			phase: PhaseActive,
		},
		"not running, host network, unscheduled, other namespace are skipped": {
			pc: newCapture(""),
			pods: []*corev1.Pod{
				pod("pending", "n", app, func(p *corev1.Pod) { p.Status.Phase = corev1.PodPending }),
				pod("host", "n", app, func(p *corev1.Pod) { p.Spec.HostNetwork = true }),
				pod("nonode", "", app),
				pod("elsewhere", "n", app, func(p *corev1.Pod) { p.Namespace = "other" }),
				pod("ok", "n", nil),
			},
			want:  map[string][]string{"n": {iface("ok")}},
			phase: PhaseActive,
		},
		"namespace labels via pcns and calico labels": {
			pc:    newCapture(`pcns.env == "prod" && projectcalico.org/orchestrator == "k8s" && projectcalico.org/serviceaccount == "default" && projectcalico.org/namespace == "sample-namespace"`),
			pods:  []*corev1.Pod{pod("a", "n", nil)},
			want:  map[string][]string{"n": {iface("a")}},
			phase: PhaseActive,
		},
		"future start is scheduled with a requeue at start": {
			pc:      newCapture("all()", func(pc *v3.PacketCapture) { pc.Spec.StartTime = tm(time.Minute) }),
			pods:    []*corev1.Pod{pod("a", "n", nil)},
			want:    map[string][]string{"n": {iface("a")}},
			phase:   PhaseScheduled,
			requeue: time.Minute,
		},
		"future end requeues at end": {
			pc:      newCapture("all()", func(pc *v3.PacketCapture) { pc.Spec.EndTime = tm(time.Hour) }),
			pods:    []*corev1.Pod{pod("a", "n", nil)},
			want:    map[string][]string{"n": {iface("a")}},
			phase:   PhaseActive,
			requeue: time.Hour,
		},
		"past end is finished with no commands": {
			pc:    newCapture("all()", func(pc *v3.PacketCapture) { pc.Spec.EndTime = tm(-time.Second) }),
			pods:  []*corev1.Pod{pod("a", "n", nil)},
			want:  map[string][]string{},
			phase: PhaseFinished,
		},
		"no match": {
			pc:    newCapture(`k8s-app == "nope"`),
			pods:  []*corev1.Pod{pod("a", "n", app)},
			want:  map[string][]string{},
			phase: PhaseActive,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			d := Decide(tc.pc, selector.MustParse(tc.pc.Spec.Selector), ns, tc.pods, DefaultConfig(), t0)
			if diff := cmp.Diff(tc.want, endpoints(d)); diff != "" {
				t.Errorf("endpoints (-want +got):\n%s", diff)
			}
			if d.Phase != tc.phase || d.RequeueAfter != tc.requeue {
				t.Errorf("phase %s requeue %s, want %s %s", d.Phase, d.RequeueAfter, tc.phase, tc.requeue)
			}
			for node, c := range d.Commands {
				if c.Node != node || c.UID != "u-1" || c.Generation != 3 || c.SnapLength != schemas.MaxSnapLength {
					t.Errorf("command %+v", c)
				}
				if _, err := schemas.EncodeCommand(c); err != nil {
					t.Errorf("encode: %v", err)
				}
			}
		})
	}
}

func TestEndpointLabels(t *testing.T) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"team": "x", "app": "ns"}}}
	p := pod("a", "n", map[string]string{"app": "web", "pcns.team": "pod-wins"})
	p.Spec.ServiceAccountName = ""
	want := map[string]string{
		"app": "web", "pcns.app": "ns", "pcns.team": "pod-wins",
		LabelNamespace: "sample-namespace", LabelOrchestrator: "k8s",
	}
	if diff := cmp.Diff(want, EndpointLabels(p, ns)); diff != "" {
		t.Errorf("labels (-want +got):\n%s", diff)
	}
}

func TestInterfaceName(t *testing.T) {
	for _, prefix := range []string{"cali", "x"} {
		got := InterfaceName(prefix, "sample-namespace", "pod-1")
		if want := testenv.CalicoInterfaceName(prefix, "sample-namespace", "pod-1"); got != want {
			t.Errorf("InterfaceName(%q) = %q, want %q", prefix, got, want)
		}
		if err := schemas.CheckInterface(got); err != nil {
			t.Error(err)
		}
	}
}

func TestCommandFilters(t *testing.T) {
	tcp := intstr.FromString("TCP")
	n17 := intstr.FromInt32(17)
	got := commandFilters([]v3.PacketCaptureRule{
		{Protocol: &tcp, Ports: []intstr.IntOrString{intstr.FromInt32(80), intstr.FromString("8000:8080")}},
		{Protocol: &n17},
		{Ports: []intstr.IntOrString{intstr.FromInt32(53)}},
	})
	want := []schemas.Filter{{Protocol: "6", Ports: []string{"80", "8000:8080"}}, {Protocol: "17"}, {Ports: []string{"53"}}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("filters (-want +got):\n%s", diff)
	}
}

func TestSameCommand(t *testing.T) {
	start := t0.Add(time.Hour)
	base := func() *schemas.Command {
		s := start
		return &schemas.Command{Version: 1, Action: schemas.ActionCapture, Namespace: "ns", Name: "c", UID: "u", Generation: 1, Node: "n",
			Endpoints: []schemas.Endpoint{{Pod: "p", Namespace: "ns", Interface: "cali1", Labels: map[string]string{"a": "b"}}},
			StartTime: &s, IssuedAt: t0}
	}
	local := start.In(time.FixedZone("x", 3600))
	cases := map[string]struct {
		mod  func(*schemas.Command)
		same bool
	}{
		"identical":          {func(*schemas.Command) {}, true},
		"issued later":       {func(c *schemas.Command) { c.IssuedAt = t0.Add(time.Hour) }, true},
		"same time, zone":    {func(c *schemas.Command) { c.StartTime = &local }, true},
		"nil vs empty lists": {func(c *schemas.Command) { c.Filters = []schemas.Filter{} }, true},
		"label":              {func(c *schemas.Command) { c.Endpoints[0].Labels["a"] = "c" }, false},
		"generation":         {func(c *schemas.Command) { c.Generation = 2 }, false},
		"uid":                {func(c *schemas.Command) { c.UID = "v" }, false},
		"start":              {func(c *schemas.Command) { c.StartTime = nil }, false},
		"endpoint gone":      {func(c *schemas.Command) { c.Endpoints = nil }, false},
		"stop":               {func(c *schemas.Command) { c.Action = schemas.ActionStop }, false},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			b := base()
			tc.mod(b)
			if got := SameCommand(base(), b); got != tc.same {
				t.Errorf("SameCommand = %v, want %v", got, tc.same)
			}
		})
	}
	a := StopCommand("ns", "c", "u", 1, "n", t0)
	b := StopCommand("ns", "c", "u", 2, "n", t0.Add(time.Hour))
	if !SameCommand(a, b) {
		t.Error("two stops of the same capture differ")
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	bad := DefaultConfig()
	bad.InterfacePrefix = "toolong"
	bad.SnapLength = 0
	bad.LeaderElection.RenewDeadline = bad.LeaderElection.LeaseDuration
	err := bad.Validate()
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, want := range []string{"interfacePrefix", "snapLength", "leaseDuration"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}
