package schemas

import (
	"strings"
	"testing"
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
