package router

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/schemas"
	v3 "github.com/capstream/capstream/schemas/v3"
)

// The functional tests' harness: a private namespace on the shared
// kube-apiserver, an embedded JetStream, routers run with testenv.Start,
// and a recorder of every command published for the namespace.

const waitFor = 15 * time.Second

// harness is one test's kube-apiserver, JetStream and routers.
type harness struct {
	t    *testing.T
	kube *testenv.KubeEnv
	nats *testenv.NATSServer
	ns   string
	rec  *recorder
}

// newHarness gives a test a private namespace with nsLabels and a JetStream
// with capstream's streams.
func newHarness(t *testing.T, nsLabels map[string]string) *harness {
	h := bareHarness(t, nsLabels)
	if err := schemas.EnsureStreams(t.Context(), h.nats.JS, schemas.DefaultPacketsStreamLimits()); err != nil {
		t.Fatal(err)
	}
	return h
}

// onePodHarness is a started router over one pod, p on node-1, that no
// capture selects yet.
func onePodHarness(t *testing.T) *harness {
	h := newHarness(t, nil)
	h.pod("p", "node-1", nil)
	h.start(nil)
	return h
}

// bareHarness is newHarness without the streams, for the tests of the
// router creating them.
func bareHarness(t *testing.T, nsLabels map[string]string) *harness {
	kube := testenv.Kube(t)
	h := &harness{t: t, kube: kube, nats: testenv.NATS(t), ns: kube.Namespace(t, nsLabels)}
	h.rec = newRecorder(t, h.nats.Conn, h.ns)
	return h
}

// routerHandle is a running router.
type routerHandle struct {
	r   *Router
	reg *prometheus.Registry
	run *testenv.Running
	nc  *nats.Conn
}

// start runs a router with test timings and its own NATS connection;
// it stops when the test ends at the latest.
func (h *harness) start(mod func(*Config)) *routerHandle {
	t := h.t
	cfg := DefaultConfig()
	cfg.ResyncPeriod = 2 * time.Second // exercise resyncs: they must publish nothing
	cfg.StatusFlushDelay = 100 * time.Millisecond
	cfg.RetryMaxDelay = time.Second
	// Other packages' tests share the API server: stay out of their
	// captures' status.
	cfg.Namespace = h.ns
	cfg.LeaderElection.Namespace = h.ns
	cfg.LeaderElection.LeaseDuration = 3 * time.Second
	cfg.LeaderElection.RenewDeadline = 2 * time.Second
	cfg.LeaderElection.RetryPeriod = 200 * time.Millisecond
	if mod != nil {
		mod(&cfg)
	}
	// Its cleanup is registered before Start's, so it runs once the router
	// stopped.
	nc, js := h.nats.Connect(t, "capstream-router")
	kc, err := kubernetes.NewForConfig(h.kube.Config)
	if err != nil {
		t.Fatal(err)
	}
	dc, err := dynamic.NewForConfig(h.kube.Config)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	r, err := New(cfg, Deps{
		Logger:     testenv.Logger(t),
		Registerer: reg, Kube: kc, Dynamic: dc, JetStream: js,
	})
	if err != nil {
		t.Fatal(err)
	}
	return &routerHandle{r: r, reg: reg, run: testenv.Start(t, "router", r.Run), nc: nc}
}

// stop stops the router, then closes its NATS connection.
func (rh *routerHandle) stop(t *testing.T) {
	t.Helper()
	if err := rh.run.Stop(); err != nil {
		t.Errorf("router run: %v", err)
	}
	rh.nc.Close()
}

// recorder sees every command published for one namespace's captures, in
// order, by a plain subscription next to the stream.
type recorder struct {
	mu   sync.Mutex
	msgs []*schemas.Command
	bad  []string
}

func newRecorder(t *testing.T, nc *nats.Conn, ns string) *recorder {
	rec := &recorder{}
	nsTok, err := schemas.Token(ns)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := nc.Subscribe("capstream.cmd.*."+nsTok+".*", func(m *nats.Msg) {
		c, err := schemas.DecodeCommand(m.Data)
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if err != nil {
			rec.bad = append(rec.bad, err.Error())
			return
		}
		rec.msgs = append(rec.msgs, c)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return rec
}

func (rec *recorder) count() int {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return len(rec.msgs)
}

// check fails on undecodable commands and on any command that repeats the
// previous one of its subject: the router must never republish a state.
func (rec *recorder) check(t *testing.T) {
	t.Helper()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, b := range rec.bad {
		t.Errorf("undecodable command: %s", b)
	}
	last := map[string]*schemas.Command{}
	for i, c := range rec.msgs {
		k := c.Node + "/" + c.Name
		if prev := last[k]; prev != nil && SameCommand(prev, c) {
			t.Errorf("command %d repeats the previous one on %s: %s", i, k, c.Action)
		}
		if last[k] == nil && c.Action == schemas.ActionStop {
			t.Errorf("command %d is a stop on %s, which never captured", i, k)
		}
		last[k] = c
	}
}

// commands returns the last command per node of one capture in the stream.
func (h *harness) commands(name string) (map[string]*schemas.Command, error) {
	ctx := h.t.Context()
	stream, err := h.nats.JS.Stream(ctx, schemas.StreamCommands)
	if err != nil {
		return nil, err
	}
	nsTok, _ := schemas.Token(h.ns)
	nameTok, _ := schemas.Token(name)
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter("capstream.cmd.*."+nsTok+"."+nameTok))
	if err != nil {
		return nil, err
	}
	out := map[string]*schemas.Command{}
	for subj := range info.State.Subjects {
		m, err := stream.GetLastMsgForSubject(ctx, subj)
		if err != nil {
			return nil, err
		}
		c, err := schemas.DecodeCommand(m.Data)
		if err != nil {
			return nil, err
		}
		out[c.Node] = c
	}
	return out, nil
}

// expect waits until the capture's commands are: for each node in want,
// a capture on exactly those pods' interfaces; for each node in stopped, a
// stop; and nothing else.
func (h *harness) expect(name string, want map[string][]string, stopped ...string) {
	h.t.Helper()
	testenv.Eventually(h.t, waitFor, func() error {
		got, err := h.commands(name)
		if err != nil {
			return err
		}
		wantNodes := slices.Sorted(maps.Keys(want))
		wantNodes = append(wantNodes, stopped...)
		slices.Sort(wantNodes)
		if gotNodes := slices.Sorted(maps.Keys(got)); !slices.Equal(gotNodes, wantNodes) {
			return fmt.Errorf("commands on nodes %v, want %v", gotNodes, wantNodes)
		}
		for node, pods := range want {
			c := got[node]
			if c.Action != schemas.ActionCapture {
				return fmt.Errorf("node %s: %s, want capture", node, c.Action)
			}
			var ifaces, wantIfaces []string
			for _, e := range c.Endpoints {
				ifaces = append(ifaces, e.Interface)
			}
			for _, p := range pods {
				wantIfaces = append(wantIfaces, testenv.CalicoInterfaceName("cali", h.ns, p))
			}
			slices.Sort(ifaces)
			slices.Sort(wantIfaces)
			if !slices.Equal(ifaces, wantIfaces) {
				return fmt.Errorf("node %s: interfaces %v, want %v (pods %v)", node, ifaces, wantIfaces, pods)
			}
		}
		for _, node := range stopped {
			if got[node].Action != schemas.ActionStop {
				return fmt.Errorf("node %s: %s, want stop", node, got[node].Action)
			}
		}
		return nil
	})
}

// pod creates a running pod on a node, as a kubelet would report it.
func (h *harness) pod(name, node string, labels map[string]string) {
	h.t.Helper()
	ctx := h.t.Context()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: h.ns, Labels: labels},
		Spec: corev1.PodSpec{NodeName: node, ServiceAccountName: "default",
			Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}}},
	}
	pods := h.kube.Client.CoreV1().Pods(h.ns)
	created, err := pods.Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		h.t.Fatalf("create pod %s: %v", name, err)
	}
	created.Status.Phase = corev1.PodRunning
	if _, err := pods.UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		h.t.Fatalf("pod %s running: %v", name, err)
	}
}

func (h *harness) deletePod(name string) {
	h.t.Helper()
	zero := int64(0)
	err := h.kube.Client.CoreV1().Pods(h.ns).Delete(h.t.Context(), name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	if err != nil && !apierrors.IsNotFound(err) {
		h.t.Fatalf("delete pod %s: %v", name, err)
	}
}

func (h *harness) relabelPod(name string, labels map[string]string) {
	h.t.Helper()
	pods := h.kube.Client.CoreV1().Pods(h.ns)
	p, err := pods.Get(h.t.Context(), name, metav1.GetOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	p.Labels = labels
	if _, err := pods.Update(h.t.Context(), p, metav1.UpdateOptions{}); err != nil {
		h.t.Fatalf("relabel pod %s: %v", name, err)
	}
}

func (h *harness) labelNamespace(labels map[string]string) {
	h.t.Helper()
	nss := h.kube.Client.CoreV1().Namespaces()
	n, err := nss.Get(h.t.Context(), h.ns, metav1.GetOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	n.Labels = labels
	if _, err := nss.Update(h.t.Context(), n, metav1.UpdateOptions{}); err != nil {
		h.t.Fatalf("label namespace: %v", err)
	}
}

func (h *harness) captures() dynamic.ResourceInterface {
	return h.kube.Dynamic.Resource(v3.Resource).Namespace(h.ns)
}

func (h *harness) createCapture(name, sel string) {
	h.t.Helper()
	h.kube.CreateCapture(h.t, h.ns, name, sel)
}

func (h *harness) getCapture(name string) (*v3.PacketCapture, error) {
	u, err := h.captures().Get(h.t.Context(), name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	return fromUnstructured(u)
}

// updateCapture changes a capture's spec, retrying on conflicts with the
// router's status writes.
func (h *harness) updateCapture(name string, mod func(*v3.PacketCapture)) {
	h.t.Helper()
	testenv.Eventually(h.t, waitFor, func() error {
		pc, err := h.getCapture(name)
		if err != nil {
			return err
		}
		mod(pc)
		obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(pc)
		if err != nil {
			return err
		}
		u := &unstructured.Unstructured{Object: obj}
		u.SetAPIVersion(v3.SchemeGroupVersion.String())
		u.SetKind(v3.Kind)
		_, err = h.captures().Update(h.t.Context(), u, metav1.UpdateOptions{})
		return err
	})
}

func waitCondition(t *testing.T, h *harness, name, typ string, status metav1.ConditionStatus, reason string) {
	t.Helper()
	testenv.Eventually(t, waitFor, func() error {
		pc, err := h.getCapture(name)
		if err != nil {
			return err
		}
		c := meta.FindStatusCondition(pc.Status.Conditions, typ)
		if c == nil || c.Status != status || c.Reason != reason {
			return fmt.Errorf("condition %s is %+v, want %s/%s", typ, c, status, reason)
		}
		return nil
	})
}

// waitTerm waits until a router leads and has reconciled every capture
// once, i.e. until it would have published whatever it was going to.
func waitTerm(t *testing.T, rh *routerHandle) {
	t.Helper()
	testenv.Eventually(t, waitFor, func() error {
		if !rh.r.IsLeader() {
			return errors.New("not leading")
		}
		rh.r.mu.Lock()
		q := rh.r.queue
		rh.r.mu.Unlock()
		if q == nil || q.Len() > 0 || testenv.Metric(t, rh.reg, "capstream_router_reconciles_total", nil) == 0 {
			return errors.New("first pass not done")
		}
		return nil
	})
	// Captures reconciled in the first pass may still be in a worker, which
	// nothing outside the worker shows: give them half a second, during
	// which the router must keep leading.
	testenv.Consistently(t, 500*time.Millisecond, func() error {
		if !rh.r.IsLeader() {
			return errors.New("lost the lease during the first pass")
		}
		return nil
	})
}

// publishStatus publishes a node's status report as a producer or a sink
// does.
func (h *harness) publishStatus(s *schemas.Status) error {
	data, err := schemas.EncodeStatus(s)
	if err != nil {
		return err
	}
	subj, err := schemas.ReportSubject(s)
	if err != nil {
		return err
	}
	_, err = h.nats.JS.Publish(h.t.Context(), subj, data)
	return err
}
