package schemas

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestKeySegment(t *testing.T) {
	short := strings.Repeat("a", MaxKeySegment)
	if got := KeySegment(short); got != short {
		t.Errorf("a %d-byte segment was changed to %q", len(short), got)
	}
	// A 253-byte pod name plus "_" and a 15-byte interface: 269 bytes.
	long := strings.Repeat("p", 253) + "_cali1234567890a"
	other := strings.Repeat("p", 253) + "_cali1234567890b"
	got := KeySegment(long)
	if len(got) != MaxKeySegment || !strings.HasPrefix(got, long[:MaxKeySegment-17]+"~") {
		t.Errorf("KeySegment(%d bytes) = %q (%d bytes)", len(long), got, len(got))
	}
	if got == KeySegment(other) {
		t.Error("two long segments that differ only at the end map to one")
	}
	if KeySegment(long) != got {
		t.Error("KeySegment is not deterministic")
	}
}

func FuzzKeySegment(f *testing.F) {
	f.Add("web-0_cali1234567890a")
	f.Add(strings.Repeat("x", 300))
	f.Fuzz(func(t *testing.T, s string) {
		got := KeySegment(s)
		if len(got) > MaxKeySegment {
			t.Fatalf("KeySegment(%d bytes) is %d bytes", len(s), len(got))
		}
		if len(s) <= MaxKeySegment && got != s {
			t.Fatalf("KeySegment changed a short segment %q to %q", s, got)
		}
	})
}

func TestCaptureDir(t *testing.T) {
	long := strings.Repeat("c", 253)
	cases := map[string]struct {
		ns, name, uid string
		want          string
	}{
		"capture": {"team-a", "web.capture", "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0",
			"capstream/team-a/web.capture/0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0/"},
		"every uid of a name": {"team-a", "web.capture", "", "capstream/team-a/web.capture/"},
		"long name":           {"team-a", long, "u1", "capstream/team-a/" + KeySegment(long) + "/u1/"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, CaptureDir("capstream", tc.ns, tc.name, tc.uid)); diff != "" {
				t.Errorf("CaptureDir (-want +got):\n%s", diff)
			}
		})
	}
	// A name's directory holds each of its UIDs' directories, and no other
	// name's: "web" is not a prefix match of "web.capture".
	all := CaptureDir("p", "ns", "web", "")
	if !strings.HasPrefix(CaptureDir("p", "ns", "web", "u1"), all) || strings.HasPrefix(CaptureDir("p", "ns", "web.capture", "u1"), all) {
		t.Errorf("%s does not hold exactly the UIDs of its name", all)
	}
}
