package k8s

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
)

// checkSecrets: every secret the container gets comes from the
// component's own Secret, capstream-<name>-credentials, by the keys
// README.md lists, none optional: a pod whose Secret lacks a key does
// not start, rather than start without a credential.
func checkSecrets(t *testing.T, c component, ctr corev1.Container) {
	t.Helper()
	own := "capstream-" + c.name + "-credentials"
	got := map[string]string{}
	for _, e := range ctr.Env {
		if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
			continue
		}
		ref := e.ValueFrom.SecretKeyRef
		if ref.Name != own {
			t.Errorf("env %s: Secret %s, want %s", e.Name, ref.Name, own)
		}
		if ref.Optional != nil && *ref.Optional {
			t.Errorf("env %s: optional", e.Name)
		}
		got[e.Name] = ref.Key
	}
	if d := cmp.Diff(c.secretKeys, got); d != "" {
		t.Errorf("keys of %s by variable (-want +got):\n%s", own, d)
	}
	if len(ctr.EnvFrom) != 0 {
		t.Errorf("envFrom %+v: every variable is named", ctr.EnvFrom)
	}
}

// TestPodSecurity checks the hardening in the pod specs: who may use the
// API, who runs as root with which capabilities, and host namespaces.
func TestPodSecurity(t *testing.T) {
	objs := loadManifests(t)
	for _, c := range components {
		t.Run(c.name, func(t *testing.T) {
			spec := workloadOf(t, objs, c).pod.Spec
			ctr := spec.Containers[0]
			if spec.ServiceAccountName != c.sa {
				t.Errorf("serviceAccountName %q, want %s", spec.ServiceAccountName, c.sa)
			}
			wantToken := c.kubeAPI
			if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken != wantToken {
				t.Errorf("automountServiceAccountToken %s, want %v", ptrString(spec.AutomountServiceAccountToken), wantToken)
			}
			if spec.HostPID || spec.HostIPC {
				t.Error("host PID or IPC namespace")
			}
			if spec.HostNetwork != (c.name == "producer") {
				t.Errorf("hostNetwork %v: only the producer uses the node's network", spec.HostNetwork)
			}
			if spec.HostNetwork && spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
				t.Errorf("dnsPolicy %q: a hostNetwork pod needs ClusterFirstWithHostNet to resolve Service names", spec.DNSPolicy)
			}
			for _, v := range spec.Volumes {
				if v.HostPath != nil {
					t.Errorf("volume %s: hostPath", v.Name)
				}
			}
			psc := spec.SecurityContext
			if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Error("pod seccompProfile: want RuntimeDefault")
			}
			sc := ctr.SecurityContext
			if sc == nil {
				t.Fatal("container securityContext: missing")
			}
			if sc.Privileged == nil || *sc.Privileged {
				t.Error("privileged: want false")
			}
			if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				t.Error("allowPrivilegeEscalation: want false")
			}
			if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				t.Error("readOnlyRootFilesystem: want true")
			}
			var add []string
			if sc.Capabilities != nil {
				if d := cmp.Diff([]corev1.Capability{"ALL"}, sc.Capabilities.Drop); d != "" {
					t.Errorf("capabilities.drop (-want +got):\n%s", d)
				}
				for _, a := range sc.Capabilities.Add {
					add = append(add, string(a))
				}
			} else {
				t.Error("capabilities: want drop ALL")
			}
			if c.root {
				// AF_PACKET sockets need CAP_NET_RAW and nothing more (see
				// 30-producer.yaml); added capabilities only reach uid 0.
				if d := cmp.Diff([]string{"NET_RAW"}, add); d != "" {
					t.Errorf("capabilities.add (-want +got):\n%s", d)
				}
				if psc.RunAsUser == nil || *psc.RunAsUser != 0 {
					t.Errorf("runAsUser %s: want 0, the only uid that gets added capabilities", ptrString(psc.RunAsUser))
				}
			} else {
				if len(add) != 0 {
					t.Errorf("capabilities.add %v: want none", add)
				}
				if psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
					t.Errorf("runAsNonRoot %s, runAsUser %s: want a non-root uid", ptrString(psc.RunAsNonRoot), ptrString(psc.RunAsUser))
				}
			}
		})
	}
}

// podSecrets are the names of the Secrets a pod template reads, by any
// route: environment variables, envFrom, secret and projected volumes.
// Image pull secrets are the registry's, not a component's, and are left
// out.
func podSecrets(spec corev1.PodSpec) []string {
	var names []string
	for _, ctr := range slices.Concat(spec.InitContainers, spec.Containers) {
		for _, e := range ctr.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				names = append(names, e.ValueFrom.SecretKeyRef.Name)
			}
		}
		for _, e := range ctr.EnvFrom {
			if e.SecretRef != nil {
				names = append(names, e.SecretRef.Name)
			}
		}
	}
	for _, v := range spec.Volumes {
		if v.Secret != nil {
			names = append(names, v.Secret.SecretName)
		}
		if v.Projected != nil {
			for _, src := range v.Projected.Sources {
				if src.Secret != nil {
					names = append(names, src.Secret.Name)
				}
			}
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// TestSecretsPerComponent: each component reads exactly one Secret of
// credentials, its own (and the access API its TLS Secret), and no Secret
// is read by two components, so the keys found on one
// compromised node or pod open only that component's access. The
// producer reads none: its credential is its pod's own token.
func TestSecretsPerComponent(t *testing.T) {
	objs := loadManifests(t)
	readers := map[string][]string{}
	for _, c := range components {
		got := podSecrets(workloadOf(t, objs, c).pod.Spec)
		var want []string
		if len(c.secretKeys) > 0 {
			want = []string{"capstream-" + c.name + "-credentials"}
		}
		if c.tlsSecret != "" {
			want = append(want, c.tlsSecret)
			slices.Sort(want)
		}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("%s reads Secrets (-want +got):\n%s", c.name, d)
		}
		for _, s := range got {
			readers[s] = append(readers[s], c.name)
		}
	}
	for s, r := range readers {
		if len(r) > 1 {
			t.Errorf("Secret %s is read by %v", s, r)
		}
	}
}
