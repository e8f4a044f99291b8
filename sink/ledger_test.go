package sink

import (
	"fmt"
	"testing"
)

// TestLedgerBounded: past maxLedgerKeys captures the ledger forgets the
// least recently changed in bulk (not one per new capture, which cost a
// scan of the whole ledger per forged capture), and keeps the one that
// changed last.
func TestLedgerBounded(t *testing.T) {
	var l Ledger
	key := func(i int) CaptureKey {
		return CaptureKey{Namespace: "ns", Name: fmt.Sprint("cap-", i), UID: fmt.Sprint("u", i), Node: "n"}
	}
	for i := range maxLedgerKeys {
		l.Lose(key(i), 1, 1)
	}
	l.Fail(key(0), "HandlerPanic", 1, "boom") // now the most recent
	l.Lose(key(maxLedgerKeys), 1, 1)          // one over
	if n := len(l.m); n != maxLedgerKeys-ledgerFreed+1 {
		t.Errorf("%d captures kept after overflowing, want %d", n, maxLedgerKeys-ledgerFreed+1)
	}
	if _, ok := l.m[key(0)]; !ok {
		t.Error("the most recently changed capture was forgotten")
	}
	if _, ok := l.m[key(maxLedgerKeys)]; !ok {
		t.Error("the new capture is not kept")
	}
}
