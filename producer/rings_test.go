package producer

import (
	"strings"
	"testing"
)

func TestRingsBudget(t *testing.T) {
	r := &rings{max: 64 << 20}
	if !r.reserve(32<<20) || !r.reserve(32<<20) {
		t.Fatal("two 32 MiB rings do not fit 64 MiB")
	}
	if r.reserve(32 << 20) {
		t.Fatal("a third ring fit a full budget")
	}
	if why := r.refusal(32 << 20); !strings.Contains(why, "64 MiB of producer.maxRingBytes 64 MiB in use by 2 interfaces") {
		t.Errorf("refusal %q", why)
	}
	r.release(32 << 20)
	if !r.reserve(32<<20) || r.inUse() != 64<<20 {
		t.Errorf("a released ring's room is not reusable: in use %d", r.inUse())
	}
	if !r.reserve(0) {
		t.Error("a source without a ring was refused")
	}
}
