package schemas

import (
	"os/exec"
	"testing"
)

// TestInterfaceName pins Calico's host-side names: the router, testenv and
// netsim all depend on this exact rule.
func TestInterfaceName(t *testing.T) {
	for _, c := range []struct{ prefix, ns, pod, want string }{
		// printf sample-namespace.sample-web | sha1sum
		{"cali", "sample-namespace", "sample-web", "cali" + sha1Prefix(t, "sample-namespace.sample-web")},
		{"cali", "default", "a.b", "cali" + sha1Prefix(t, "default.a.b")},
		{"x", "sample-namespace", "pod-1", "x" + sha1Prefix(t, "sample-namespace.pod-1")},
	} {
		got := InterfaceName(c.prefix, c.ns, c.pod)
		if got != c.want || len(got) != len(c.prefix)+InterfaceHashDigits {
			t.Errorf("InterfaceName(%s, %s, %s) = %s, want %s", c.prefix, c.ns, c.pod, got, c.want)
		}
		if err := CheckInterface(got); err != nil {
			t.Error(err)
		}
	}
}

// sha1Prefix is the first 11 hex digits sha1sum prints for s: an oracle
// outside Go's crypto/sha1.
func sha1Prefix(t *testing.T, s string) string {
	t.Helper()
	out, err := exec.Command("sh", "-c", "printf %s \"$0\" | sha1sum", s).Output()
	if err != nil {
		t.Fatalf("sha1sum: %v", err)
	}
	return string(out[:InterfaceHashDigits])
}
