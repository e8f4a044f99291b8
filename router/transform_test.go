package router

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/capstream/capstream/router/selector"
	v3 "github.com/capstream/capstream/schemas/v3"
)

// heavyPod is a pod as a real cluster holds it: annotations, owner,
// managed fields, containers with env, mounts and resources, volumes,
// tolerations, conditions and container statuses.
func heavyPod(name, node, app string) *corev1.Pod {
	ann := map[string]string{}
	for i := range 30 {
		ann[fmt.Sprintf("example.com/annotation-%02d", i)] = fmt.Sprintf("value-%d-%s", i, name)
	}
	var env []corev1.EnvVar
	for i := range 40 {
		env = append(env, corev1.EnvVar{Name: fmt.Sprintf("ENV_%02d", i), Value: fmt.Sprintf("some-configuration-value-%d", i)})
	}
	ctr := func(n string) corev1.Container {
		return corev1.Container{
			Name: n, Image: "registry.example.com/team/" + n + ":v1.2.3", Env: env,
			Args:         []string{"--listen=:8080", "--verbose"},
			VolumeMounts: []corev1.VolumeMount{{Name: "config", MountPath: "/etc/config"}, {Name: "data", MountPath: "/data"}},
			Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
				corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")}},
		}
	}
	now := metav1.NewTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	return &corev1.Pod{
		TypeMeta: metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: "shop", UID: "uid-" + "0123456789", ResourceVersion: "4711", Generation: 1,
			CreationTimestamp: now,
			Labels:            map[string]string{"app": app, "tier": "web", "pod-template-hash": "5d8f7c9b6"},
			Annotations:       ann,
			OwnerReferences:   []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: app + "-5d8f7c9b6", UID: "rs-uid"}},
			ManagedFields:     []metav1.ManagedFieldsEntry{{Manager: "kube-controller-manager", Operation: metav1.ManagedFieldsOperationUpdate, FieldsType: "FieldsV1", FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:metadata":{}}`)}}},
		},
		Spec: corev1.PodSpec{
			NodeName: node, ServiceAccountName: "shop-sa",
			Containers:     []corev1.Container{ctr("app"), ctr("sidecar")},
			InitContainers: []corev1.Container{ctr("init")},
			Volumes: []corev1.Volume{
				{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}},
				{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			},
			Tolerations: []corev1.Toleration{{Key: "node.kubernetes.io/not-ready", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute}},
		},
		Status: corev1.PodStatus{
			Phase: corev1.PodRunning, PodIP: "10.1.2.3", PodIPs: []corev1.PodIP{{IP: "10.1.2.3"}, {IP: "fd00::3"}},
			HostIP: "192.168.0.10", StartTime: &now,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now}},
			ContainerStatuses: []corev1.ContainerStatus{{Name: "app", Ready: true, Image: "registry.example.com/team/app:v1.2.3",
				ImageID: "sha256:0123456789abcdef", ContainerID: "containerd://0123456789abcdef"}},
		},
	}
}

// TestSlimPodSameDecision: the transformed pods give Decide the same
// commands as the full ones, for selectors on the pod's labels, its
// namespace's labels, its service account and Calico's keys, and the
// handlers see the same endpoint changes.
func TestSlimPodSameDecision(t *testing.T) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"team": "a"},
		Annotations: map[string]string{"example.com/owner": "team-a"}}}
	slimNS, err := slimObject(ns.DeepCopy())
	if err != nil {
		t.Fatal(err)
	}
	var full, slim []*corev1.Pod
	for i := range 12 {
		p := heavyPod(fmt.Sprintf("pod-%02d", i), fmt.Sprintf("node-%d", i%3), fmt.Sprintf("app-%d", i%4))
		switch i {
		case 5:
			p.Status.Phase = corev1.PodPending
		case 7:
			p.Spec.HostNetwork = true
		case 9:
			p.Spec.NodeName = ""
		case 10:
			p.Spec.ServiceAccountName = "other"
		}
		full = append(full, p)
		s, err := slimObject(p.DeepCopy())
		if err != nil {
			t.Fatal(err)
		}
		slim = append(slim, s.(*corev1.Pod))
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, sel := range []string{"", "app == 'app-1'", "tier == 'web' && app != 'app-2'", "pcns.team == 'a'",
		"projectcalico.org/serviceaccount == 'shop-sa'", "projectcalico.org/namespace == 'shop'", "has(pod-template-hash)"} {
		pc := &v3.PacketCapture{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "cap", UID: "cap-uid", Generation: 3},
			Spec: v3.PacketCaptureSpec{Selector: sel}}
		want := Decide(pc, selector.MustParse(sel), ns, full, DefaultConfig(), now)
		got := Decide(pc, selector.MustParse(sel), slimNS.(*corev1.Namespace), slim, DefaultConfig(), now)
		if want.Endpoints == 0 {
			t.Errorf("selector %q: no endpoint; the test pods should match", sel)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("selector %q: slim pods decide differently (-full +slim):\n%s", sel, diff)
		}
	}
	for i := range full {
		for j := range full {
			if a, b := endpointChanged(full[i], full[j]), endpointChanged(slim[i], slim[j]); a != b {
				t.Errorf("endpointChanged(%s, %s): full %v, slim %v", full[i].Name, full[j].Name, a, b)
			}
		}
		if a, b := IsEndpoint(full[i]), IsEndpoint(slim[i]); a != b {
			t.Errorf("IsEndpoint(%s): full %v, slim %v", full[i].Name, a, b)
		}
	}
}

// TestSlimPodDropsHeavyParts: the transform keeps only what the router
// reads, drops the rest, is idempotent and leaves other objects whole but
// for their managed fields.
func TestSlimPodDropsHeavyParts(t *testing.T) {
	p := heavyPod("pod", "node-1", "app")
	out, err := slimObject(p.DeepCopy())
	if err != nil {
		t.Fatal(err)
	}
	s := out.(*corev1.Pod)
	want := &corev1.Pod{
		TypeMeta: p.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, UID: p.UID, ResourceVersion: p.ResourceVersion,
			Generation: p.Generation, CreationTimestamp: p.CreationTimestamp, Labels: p.Labels},
		Spec:   corev1.PodSpec{NodeName: "node-1", ServiceAccountName: "shop-sa"},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: p.Status.PodIP, PodIPs: p.Status.PodIPs},
	}
	if diff := cmp.Diff(want, s); diff != "" {
		t.Errorf("slim pod (-want +got):\n%s", diff)
	}
	if fullSize, slimSize := p.Size(), s.Size(); slimSize*10 > fullSize {
		t.Errorf("slim pod is %d bytes (protobuf), the full one %d: want at most a tenth", slimSize, fullSize)
	} else {
		t.Logf("pod: %d bytes full, %d slim (protobuf)", fullSize, slimSize)
	}
	again, err := slimObject(s.DeepCopy())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(s, again); diff != "" {
		t.Errorf("not idempotent (-once +twice):\n%s", diff)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"team": "a"},
		Annotations: map[string]string{"kubectl.kubernetes.io/last-applied-configuration": "{...}"}, ManagedFields: p.ManagedFields},
		Spec: corev1.NamespaceSpec{Finalizers: []corev1.FinalizerName{"kubernetes"}}}
	outNS, err := slimObject(ns.DeepCopy())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: ns.Labels}}, outNS); diff != "" {
		t.Errorf("slim namespace (-want +got):\n%s", diff)
	}
	// Anything else (a tombstone, say) passes through, managed fields aside.
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "x", Annotations: map[string]string{"a": "b"}, ManagedFields: p.ManagedFields}}
	outCM, err := slimObject(cm)
	if err != nil {
		t.Fatal(err)
	}
	if c := outCM.(*corev1.ConfigMap); c.ManagedFields != nil || c.Annotations["a"] != "b" {
		t.Errorf("other object: %+v", c.ObjectMeta)
	}
}
