package k8s

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
)

// mountedVolume is the name of the volume ctr mounts at path, whose mount
// must be read-only without a subPath (why: what a subPath would break).
func mountedVolume(t *testing.T, ctr corev1.Container, path, why string) string {
	t.Helper()
	var vol string
	for _, m := range ctr.VolumeMounts {
		if m.MountPath == path {
			vol = m.Name
			if !m.ReadOnly || m.SubPath != "" {
				t.Errorf("mount %s: want read-only, no subPath%s", path, why)
			}
		}
	}
	return vol
}

// checkTokenVolume: the producer's NATS token is a projected token of its
// service account for tokenAudience, rotated hourly, mounted read-only at
// tokenMount; no other pod has one.
func checkTokenVolume(t *testing.T, c component, w workload, ctr corev1.Container) {
	t.Helper()
	vol := mountedVolume(t, ctr, tokenMount, " (a subPath mount is never rotated)")
	var got []corev1.ServiceAccountTokenProjection
	for _, v := range w.pod.Spec.Volumes {
		if v.Projected == nil {
			continue
		}
		for _, src := range v.Projected.Sources {
			if src.ServiceAccountToken != nil {
				got = append(got, *src.ServiceAccountToken)
				if v.Name != vol {
					t.Errorf("volume %s: a token not mounted at %s", v.Name, tokenMount)
				}
			}
		}
	}
	var want []corev1.ServiceAccountTokenProjection
	if c.name == "producer" {
		exp := int64(3600)
		want = []corev1.ServiceAccountTokenProjection{{Audience: tokenAudience, ExpirationSeconds: &exp, Path: "token"}}
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("projected service-account tokens (-want +got):\n%s", d)
	}
}

// checkServerTLS: a component that serves an API of its own (the access
// API) mounts its certificate and key, the kubernetes.io/tls keys
// tls.crt and tls.key of its own Secret, read-only at accessTLSMount,
// readable by the pod's group only, and not optional; no other pod
// mounts a Secret volume.
func checkServerTLS(t *testing.T, c component, w workload, ctr corev1.Container) {
	t.Helper()
	vol := mountedVolume(t, ctr, accessTLSMount, " (a subPath mount is never renewed)")
	var got []string
	for _, v := range w.pod.Spec.Volumes {
		sec := v.Secret
		if sec == nil {
			continue
		}
		got = append(got, sec.SecretName)
		if v.Name != vol {
			t.Errorf("volume %s: Secret %s not mounted at %s", v.Name, sec.SecretName, accessTLSMount)
		}
		want := []corev1.KeyToPath{{Key: corev1.TLSCertKey, Path: corev1.TLSCertKey}, {Key: corev1.TLSPrivateKeyKey, Path: corev1.TLSPrivateKeyKey}}
		if sec.Optional == nil || *sec.Optional || !cmp.Equal(want, sec.Items) {
			t.Errorf("volume %s: %+v, want keys tls.crt and tls.key, optional false", v.Name, sec)
		}
		if sec.DefaultMode == nil || *sec.DefaultMode != 0o440 {
			t.Errorf("volume %s: defaultMode %s, want 0440 (owner and the pod's fsGroup)", v.Name, ptrString(sec.DefaultMode))
		}
		psc := w.pod.Spec.SecurityContext
		if psc == nil || psc.FSGroup == nil || psc.RunAsGroup == nil || *psc.FSGroup != *psc.RunAsGroup {
			t.Error("fsGroup: want the pod's runAsGroup, so the process can read the 0440 key")
		}
	}
	var want []string
	if c.tlsSecret != "" {
		want = []string{c.tlsSecret}
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("Secret volumes (-want +got):\n%s", d)
	}
}

// checkTLSMount: the CA ConfigMap capstream-ca is mounted read-only at
// tlsMount, with its key ca.crt, and is not optional, so a pod never runs
// with a TLS section whose CA is missing.
func checkTLSMount(t *testing.T, w workload, ctr corev1.Container) {
	t.Helper()
	vol := mountedVolume(t, ctr, tlsMount, "")
	for _, v := range w.pod.Spec.Volumes {
		if v.Name != vol {
			continue
		}
		cm := v.ConfigMap
		want := []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}
		if cm == nil || cm.Name != "capstream-ca" || cm.Optional == nil || *cm.Optional || !cmp.Equal(want, cm.Items) {
			t.Errorf("volume %s: %+v, want ConfigMap capstream-ca, key ca.crt, optional false", v.Name, v.VolumeSource)
		}
		return
	}
	t.Errorf("%s: no volume mounted", tlsMount)
}
