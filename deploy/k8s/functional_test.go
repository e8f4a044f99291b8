package k8s

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/capstream/capstream/internal/testenv"
)

// kubectl runs kubectl against the dev API server.
func kubectl(t *testing.T, kubeconfig string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "kubectl", append([]string{"--kubeconfig", kubeconfig}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			t.Fatalf("kubectl %s: %v", strings.Join(args, " "), err)
		}
		return stdout.String(), fmt.Errorf("kubectl %s: %w: %s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

func requireKubectl(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("kubectl"); err != nil {
		if testenv.RequireDeps() {
			t.Fatalf("kubectl not found: %v", err)
		}
		t.Skipf("kubectl not found: %v", err)
	}
}

// TestApplyDryRun applies the whole directory, as a user would, as a
// server dry run, with server-side and with client-side apply: every
// object must pass the API server's schema validation (kubectl asks for
// strict field validation) and admission.
func TestApplyDryRun(t *testing.T) {
	kube := testenv.Kube(t)
	requireKubectl(t)
	// Namespaced objects dry-run only in an existing namespace. The dev
	// server never finishes deleting a namespace, so it is kept.
	kube.EnsureNamespace(t, namespace)
	// --force-conflicts: other tests own the CRD's fields (same values);
	// a dry run changes nothing either way.
	out, err := kubectl(t, kube.Kubeconfig, "apply", "--server-side", "--force-conflicts", "--dry-run=server",
		"--field-manager=capstream-manifests-test", "-f", ".")
	if err != nil {
		t.Fatal(err)
	}
	// The README's plain `kubectl apply -f deploy/k8s/` (client-side
	// apply, which also has to fit the last-applied annotation).
	if _, err := kubectl(t, kube.Kubeconfig, "apply", "--dry-run=server", "-f", "."); err != nil {
		t.Fatal(err)
	}
	checkApplied(t, out, loadManifests(t))
}

// checkApplied: kubectl's output names every object as server-side
// applied.
func checkApplied(t *testing.T, out string, objs []object) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for _, o := range objs {
		gvk := o.obj.GetObjectKind().GroupVersionKind()
		res := strings.ToLower(gvk.Kind)
		if gvk.Group != "" {
			res += "." + gvk.Group
		}
		want := res + "/" + o.meta().GetName() + " serverside-applied (server dry run)"
		if !slices.Contains(lines, want) {
			t.Errorf("%s: no line %q in kubectl's output:\n%s", o.id(), want, out)
		}
	}
}

// inNamespace is an example manifest with exampleNamespace replaced by
// ns, as the examples tell users to do.
func inNamespace(t *testing.T, file, ns string) []byte {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	const field = "namespace: " + exampleNamespace
	if !bytes.Contains(data, []byte(field)) {
		t.Fatalf("%s: no %q", file, field)
	}
	return bytes.ReplaceAll(data, []byte(field), []byte("namespace: "+ns))
}

// applyStdin runs kubectl apply on data.
func applyStdin(t *testing.T, kubeconfig string, data []byte, args ...string) (string, error) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "kubectl", append([]string{"--kubeconfig", kubeconfig, "apply", "-f", "-"}, args...)...)
	cmd.Stdin = bytes.NewReader(data)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl apply %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// TestExampleRolesGrant applies examples/ as the README says (its
// namespace replaced by one of the test's) and asks the API server what
// the bound user and group may do there and elsewhere: alice gets the
// captures and their files of that namespace, not their deletion nor
// another namespace's; a team lead also cleans; nobody else gets a thing.
func TestExampleRolesGrant(t *testing.T) {
	kube := testenv.Kube(t)
	requireKubectl(t)
	ns, other := kube.Namespace(t, nil), kube.Namespace(t, nil)
	for _, f := range manifestFiles(t, exampleDir) {
		data := inNamespace(t, f, ns)
		out, err := applyStdin(t, kube.Kubeconfig, data, "--server-side", "--dry-run=server", "--field-manager=capstream-manifests-test")
		if err != nil {
			t.Fatal(err)
		}
		checkApplied(t, out, loadManifestsIn(t, exampleDir))
		if _, err := applyStdin(t, kube.Kubeconfig, data, "--server-side", "--field-manager=capstream-manifests-test"); err != nil {
			t.Fatal(err)
		}
	}
	const pc = "packetcaptures.projectcalico.org"
	type check struct {
		as            []string // --as and --as-group flags
		verb, sub, ns string
		allowed       bool
	}
	alice := []string{"--as=alice"}
	lead := []string{"--as=bob", "--as-group=team-a-leads"}
	mallory := []string{"--as=mallory", "--as-group=developers"}
	checks := []check{
		{alice, "get", "files", ns, true},
		{alice, "delete", "files", ns, false},
		{alice, "get", "files", other, false},
		{alice, "get", "", ns, true},
		{alice, "create", "", ns, true},
		{alice, "delete", "", ns, true},
		{alice, "create", "", other, false},
		{alice, "update", "status", ns, false},
		{lead, "get", "files", ns, true},
		{lead, "delete", "files", ns, true},
		{lead, "delete", "files", other, false},
		{lead, "create", "", ns, false},
		{mallory, "get", "files", ns, false},
		{mallory, "get", "", ns, false},
	}
	for _, c := range checks {
		args := append([]string{"auth", "can-i", c.verb, pc, "-n", c.ns}, c.as...)
		if c.sub != "" {
			args = append(args, "--subresource="+c.sub)
		}
		out, err := kubectl(t, kube.Kubeconfig, args...)
		answer := strings.TrimSpace(out)
		if err != nil && answer != "no" {
			t.Fatal(err)
		}
		if got := answer == "yes"; got != c.allowed {
			t.Errorf("%v: can-i %s %s (subresource %q) in %s = %v, want %v", c.as, c.verb, pc, c.sub, c.ns, got, c.allowed)
		}
	}
	// Alice's question as the access API asks it: a SubjectAccessReview
	// for packetcaptures/files of one capture, from the API's identity.
	for _, tc := range []struct {
		ns      string
		allowed bool
	}{{ns, true}, {other, false}} {
		sar := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{User: "alice", Groups: []string{"system:authenticated"},
			ResourceAttributes: &authzv1.ResourceAttributes{Namespace: tc.ns, Verb: "get", Group: "projectcalico.org", Resource: "packetcaptures", Subresource: "files", Name: "web"}}}
		got, err := kube.Client.AuthorizationV1().SubjectAccessReviews().Create(t.Context(), sar, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got.Status.Allowed != tc.allowed {
			t.Errorf("SubjectAccessReview alice get packetcaptures/files web in %s: allowed %v (%s), want %v", tc.ns, got.Status.Allowed, got.Status.Reason, tc.allowed)
		}
	}
}

// TestRouterPermissions applies the RBAC for real and asks the API server
// what each service account may do.
func TestRouterPermissions(t *testing.T) {
	kube := testenv.Kube(t)
	requireKubectl(t)
	kube.EnsureNamespace(t, namespace)
	if _, err := kubectl(t, kube.Kubeconfig, "apply", "--server-side", "--force-conflicts",
		"--field-manager=capstream-manifests-test", "-f", "02-rbac.yaml"); err != nil {
		t.Fatal(err)
	}
	// resource is TYPE or TYPE/NAME as can-i takes it; sub is a
	// subresource.
	type check struct {
		verb, resource, sub, ns string
		allowed                 bool
	}
	const (
		pc    = "packetcaptures.projectcalico.org"
		lease = "leases.coordination.k8s.io"
	)
	routerChecks := []check{
		// What router/ does.
		{"list", pc, "", "", true},
		{"watch", pc, "", "", true},
		{"get", pc, "", "team-a", true},
		{"update", pc, "status", "team-a", true},
		{"list", "pods", "", "", true},
		{"watch", "pods", "", "", true},
		{"list", "namespaces", "", "", true},
		{"watch", "namespaces", "", "", true},
		{"create", "events", "", "team-a", true},
		{"patch", "events", "", "team-a", true},
		{"create", lease, "", namespace, true},
		{"get", lease + "/capstream-router", "", namespace, true},
		{"update", lease + "/capstream-router", "", namespace, true},
		// What it must not do.
		{"update", pc, "", "team-a", false},
		{"patch", pc, "", "team-a", false},
		{"create", pc, "", "team-a", false},
		{"delete", pc, "", "team-a", false},
		{"patch", pc, "status", "team-a", false},
		{"delete", "pods", "", "team-a", false},
		{"create", "pods", "", "team-a", false},
		{"get", "pods", "", "team-a", false},
		{"create", "pods", "exec", "team-a", false},
		{"get", "secrets", "", namespace, false},
		{"list", "secrets", "", "", false},
		{"get", "configmaps", "", namespace, false},
		{"delete", "namespaces", "", "", false},
		{"delete", "events", "", "team-a", false},
		{"get", lease + "/kube-scheduler", "", "kube-system", false},
		{"create", lease, "", "kube-system", false},
		{"update", lease + "/other-lease", "", namespace, false},
		{"delete", lease + "/capstream-router", "", namespace, false},
		{"list", "nodes", "", "", false},
		{"create", "clusterrolebindings.rbac.authorization.k8s.io", "", "", false},
	}
	run := func(t *testing.T, as string, checks []check) {
		for _, c := range checks {
			args := []string{"auth", "can-i", c.verb, c.resource, "--as=" + as}
			if c.sub != "" {
				args = append(args, "--subresource="+c.sub)
			}
			if c.ns != "" {
				args = append(args, "-n", c.ns)
			} else {
				args = append(args, "--all-namespaces")
			}
			out, err := kubectl(t, kube.Kubeconfig, args...)
			answer := strings.TrimSpace(out)
			if err != nil && answer != "no" {
				t.Fatal(err)
			}
			if got := answer == "yes"; got != c.allowed {
				t.Errorf("%s: can-i %s %s (subresource %q, namespace %q) = %v, want %v", as, c.verb, c.resource, c.sub, c.ns, got, c.allowed)
			}
		}
	}
	t.Run("router", func(t *testing.T) { run(t, routerSA, routerChecks) })
	t.Run("access", func(t *testing.T) {
		checks := []check{
			// What access/ does.
			{"create", "tokenreviews.authentication.k8s.io", "", "", true},
			{"create", "subjectaccessreviews.authorization.k8s.io", "", "", true},
			{"get", pc, "", "team-a", true},
			// What it must not do: read other captures' data through
			// the API server, secrets, pods; change anything.
			{"list", pc, "", "", false},
			{"watch", pc, "", "", false},
			{"list", pc, "", "team-a", false},
			{"get", pc, "files", "team-a", false},
			{"delete", pc, "files", "team-a", false},
			{"update", pc, "status", "team-a", false},
			{"create", pc, "", "team-a", false},
			{"delete", pc, "", "team-a", false},
			{"get", "secrets", "", namespace, false},
			{"list", "secrets", "", "", false},
			{"list", "pods", "", "", false},
			{"get", "pods", "", "team-a", false},
			{"get", "configmaps", "", namespace, false},
			{"create", "serviceaccounts", "token", namespace, false},
			{"create", "localsubjectaccessreviews.authorization.k8s.io", "", "team-a", false},
			{"create", "clusterrolebindings.rbac.authorization.k8s.io", "", "", false},
			{"impersonate", "users", "", "", false},
		}
		run(t, "system:serviceaccount:"+namespace+":capstream-access", checks)
	})
	t.Run("nats-auth", func(t *testing.T) {
		checks := []check{{"create", "tokenreviews.authentication.k8s.io", "", "", true}}
		for _, c := range routerChecks {
			if c.allowed {
				c.allowed = false
				checks = append(checks, c)
			}
		}
		checks = append(checks, check{"create", "serviceaccounts", "token", namespace, false},
			check{"create", "subjectaccessreviews.authorization.k8s.io", "", "", false},
			check{"get", "secrets", "", namespace, false})
		run(t, "system:serviceaccount:"+namespace+":capstream-nats-auth", checks)
	})
	for _, sa := range []string{"capstream-producer", "capstream-sink"} {
		t.Run(sa, func(t *testing.T) {
			var none []check
			for _, c := range routerChecks {
				if c.allowed {
					c.allowed = false
					none = append(none, c)
				}
			}
			none = append(none, check{"get", "configmaps", "", namespace, false}, check{"get", "secrets", "", namespace, false},
				check{"create", "tokenreviews.authentication.k8s.io", "", "", false},
				check{"create", "serviceaccounts", "token", namespace, false})
			run(t, "system:serviceaccount:"+namespace+":"+sa, none)
		})
	}
}

// TestPodSecurityAdmission submits each pod template, as a dry-run Pod, to
// a namespace that enforces the "restricted" Pod Security level: the
// router and sinks must pass, the producer (hostNetwork, NET_RAW) must be
// refused there, which also shows admission really runs, and accepted in
// capstream-system.
func TestPodSecurityAdmission(t *testing.T) {
	kube := testenv.Kube(t)
	kube.EnsureNamespace(t, namespace)
	ctx := t.Context()
	nsClient := kube.Client.CoreV1().Namespaces()
	enforce := map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}
	_, err := nsClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: psaNamespace, Labels: enforce}}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		ns, gerr := nsClient.Get(ctx, psaNamespace, metav1.GetOptions{})
		if gerr != nil {
			t.Fatal(gerr)
		}
		if ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
			t.Fatalf("namespace %s exists without the restricted label: %v", psaNamespace, ns.Labels)
		}
		err = nil
	}
	if err != nil {
		t.Fatal(err)
	}
	objs := loadManifests(t)
	create := func(c component, in string) error {
		tmpl := workloadOf(t, objs, c).pod
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "capstream-" + c.name + "-", Namespace: in, Labels: tmpl.Labels, Annotations: tmpl.Annotations},
			Spec:       tmpl.Spec,
		}
		_, err := kube.Client.CoreV1().Pods(in).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return err
	}
	for _, c := range components {
		t.Run(c.name, func(t *testing.T) {
			err := create(c, psaNamespace)
			switch {
			case c.root && err == nil:
				t.Error("the producer passed the restricted level: admission did not run")
			case c.root && !apierrors.IsForbidden(err):
				t.Errorf("producer in %s: %v, want Forbidden by Pod Security", psaNamespace, err)
			case !c.root && err != nil:
				t.Errorf("not restricted-compliant: %v", err)
			}
			if err := create(c, namespace); err != nil {
				t.Errorf("in %s: %v", namespace, err)
			}
		})
	}
}
