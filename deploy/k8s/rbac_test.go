package k8s

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/capstream/capstream/router"
)

// routerRules is what router/ calls, verb by verb: informers list and
// watch; status.go Gets a capture after a conflict and calls UpdateStatus;
// the core/v1 event recorder creates and patches Events.
var routerRules = []rbacv1.PolicyRule{
	{APIGroups: []string{"projectcalico.org"}, Resources: []string{"packetcaptures"}, Verbs: []string{"get", "list", "watch"}},
	{APIGroups: []string{"projectcalico.org"}, Resources: []string{"packetcaptures/status"}, Verbs: []string{"update"}},
	{APIGroups: []string{""}, Resources: []string{"pods", "namespaces"}, Verbs: []string{"list", "watch"}},
	{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
}

// natsAuthRules is what natsauth calls: a TokenReview per connection.
var natsAuthRules = []rbacv1.PolicyRule{
	{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"tokenreviews"}, Verbs: []string{"create"}},
}

// accessRules is what access/ calls: a TokenReview per caller, a
// SubjectAccessReview per question (auth.go), and a Get of the capture
// for its live UID (files.go); it never lists or watches.
var accessRules = []rbacv1.PolicyRule{
	{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"tokenreviews"}, Verbs: []string{"create"}},
	{APIGroups: []string{"authorization.k8s.io"}, Resources: []string{"subjectaccessreviews"}, Verbs: []string{"create"}},
	{APIGroups: []string{"projectcalico.org"}, Resources: []string{"packetcaptures"}, Verbs: []string{"get"}},
}

// TestRBAC: no wildcards, the router's, nats-auth's and the access API's
// rules are exactly their calls, each binding names its own service
// account only, and the others mount no token.
func TestRBAC(t *testing.T) {
	objs := loadManifests(t)
	for _, o := range objs {
		var rules []rbacv1.PolicyRule
		switch r := o.obj.(type) {
		case *rbacv1.ClusterRole:
			rules = r.Rules
			if r.AggregationRule != nil {
				t.Errorf("%s: aggregation rule", o.id())
			}
		case *rbacv1.Role:
			rules = r.Rules
		case *rbacv1.ClusterRoleBinding:
			checkSubjects(t, o.id(), r.RoleRef.Name, r.Subjects)
		case *rbacv1.RoleBinding:
			checkSubjects(t, o.id(), r.RoleRef.Name, r.Subjects)
		}
		for _, rule := range rules {
			for _, list := range [][]string{rule.APIGroups, rule.Resources, rule.Verbs, rule.ResourceNames, rule.NonResourceURLs} {
				for _, s := range list {
					if strings.Contains(s, "*") {
						t.Errorf("%s: wildcard %q in %+v", o.id(), s, rule)
					}
				}
			}
			for _, v := range rule.Verbs {
				if slices.Contains([]string{"escalate", "bind", "impersonate", "delete", "deletecollection"}, v) {
					t.Errorf("%s: verb %s", o.id(), v)
				}
			}
			if slices.Contains(rule.Resources, "secrets") {
				t.Errorf("%s: grants secrets", o.id())
			}
		}
	}
	cr := find[*rbacv1.ClusterRole](t, objs, "capstream-router")
	if d := cmp.Diff(routerRules, cr.Rules); d != "" {
		t.Errorf("router ClusterRole (-want +got):\n%s", d)
	}
	na := find[*rbacv1.ClusterRole](t, objs, "capstream-nats-auth")
	if d := cmp.Diff(natsAuthRules, na.Rules); d != "" {
		t.Errorf("nats-auth ClusterRole (-want +got):\n%s", d)
	}
	ac := find[*rbacv1.ClusterRole](t, objs, "capstream-access")
	if d := cmp.Diff(accessRules, ac.Rules); d != "" {
		t.Errorf("access ClusterRole (-want +got):\n%s", d)
	}
	role := find[*rbacv1.Role](t, objs, "capstream-router-leader-election")
	wantLease := []rbacv1.PolicyRule{
		{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"create"}},
		{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, ResourceNames: []string{leaseName(t, objs)}, Verbs: []string{"get", "update"}},
	}
	if d := cmp.Diff(wantLease, role.Rules); d != "" {
		t.Errorf("leader election Role (-want +got):\n%s", d)
	}
	for _, name := range []string{"capstream-producer", "capstream-sink"} {
		sa := find[*corev1.ServiceAccount](t, objs, name)
		if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
			t.Errorf("ServiceAccount %s: automountServiceAccountToken must be false", name)
		}
	}
}

// checkSubjects: the router's roles are bound to the router, nats-auth's
// to nats-auth, the access API's to it, and nothing else is bound.
func checkSubjects(t *testing.T, id, role string, subjects []rbacv1.Subject) {
	t.Helper()
	sa := "capstream-router"
	if role == "capstream-nats-auth" || role == "capstream-access" {
		sa = role
	}
	want := []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: namespace}}
	if d := cmp.Diff(want, subjects); d != "" {
		t.Errorf("%s: only %s is bound (-want +got):\n%s", id, sa, d)
	}
}

// leaseName is router.leaderElection.name from the router's ConfigMap.
func leaseName(t *testing.T, objs []object) string {
	t.Helper()
	s := &router.Settings{}
	if err := yaml.Unmarshal([]byte(find[*corev1.ConfigMap](t, objs, "capstream-router").Data["router.yaml"]), s); err != nil {
		t.Fatal(err)
	}
	return s.Router.LeaderElection.Name
}

// The example Roles of examples/, in Calico Enterprise's shape: the
// resource for the captures, its files subresource for what they hold,
// with the verbs the access API asks about (access/auth.go).
var exampleRoles = map[string][]rbacv1.PolicyRule{
	"packetcapture-user": {{APIGroups: []string{"projectcalico.org"}, Resources: []string{"packetcaptures"},
		Verbs: []string{"get", "list", "watch", "create", "update", "patch", "delete"}}},
	"packetcapture-files-reader": {{APIGroups: []string{"projectcalico.org"}, Resources: []string{"packetcaptures/files"}, Verbs: []string{"get"}}},
	"packetcapture-files-admin":  {{APIGroups: []string{"projectcalico.org"}, Resources: []string{"packetcaptures/files"}, Verbs: []string{"get", "delete"}}},
}

// exampleNamespace is the namespace the examples name, which a user
// replaces with theirs.
const exampleNamespace = "team-a"

// TestExampleRoles: examples/ holds only the three Roles and bindings of
// them to users or groups, all in exampleNamespace (never capstream's,
// never cluster-wide), and the README names the Roles.
func TestExampleRoles(t *testing.T) {
	objs := loadManifestsIn(t, exampleDir)
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	top, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	roles := map[string]bool{}
	for _, o := range objs {
		if ns := o.meta().GetNamespace(); ns != exampleNamespace {
			t.Errorf("%s: namespace %q, want %s", o.id(), ns, exampleNamespace)
		}
		switch r := o.obj.(type) {
		case *rbacv1.Role:
			want, ok := exampleRoles[r.Name]
			if !ok {
				t.Errorf("%s: not an example Role", o.id())
				continue
			}
			roles[r.Name] = true
			if d := cmp.Diff(want, r.Rules); d != "" {
				t.Errorf("%s (-want +got):\n%s", o.id(), d)
			}
			for _, doc := range [][]byte{readme, top} {
				if !strings.Contains(string(doc), r.Name) {
					t.Errorf("README does not name Role %s", r.Name)
				}
			}
		case *rbacv1.RoleBinding:
			if _, ok := exampleRoles[r.RoleRef.Name]; !ok || r.RoleRef.Kind != "Role" {
				t.Errorf("%s: binds %s %s, not an example Role", o.id(), r.RoleRef.Kind, r.RoleRef.Name)
			}
			for _, s := range r.Subjects {
				if s.Kind != rbacv1.UserKind && s.Kind != rbacv1.GroupKind {
					t.Errorf("%s: subject %+v, want a user or a group", o.id(), s)
				}
			}
		default:
			t.Errorf("%s: only Roles and RoleBindings", o.id())
		}
	}
	for name := range exampleRoles {
		if !roles[name] {
			t.Errorf("no example Role %s", name)
		}
	}
}
