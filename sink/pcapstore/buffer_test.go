package pcapstore

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand"
	"testing"
)

func TestBuffer(t *testing.T) {
	rnd := rand.New(rand.NewSource(1))
	var want []byte
	b := newBuffer()
	var kept [][]byte // appended slices, with their contents at the time
	for i := range 300 {
		// Spare capacity past len: Append must not let Write fill it.
		p := make([]byte, rnd.Intn(100<<10), 101<<10)
		rnd.Read(p)
		want = append(want, p...)
		if i%2 == 0 {
			b.Write(p)
		} else {
			b.Append(p)
			kept = append(kept, p[:len(p):cap(p)], bytes.Clone(p))
		}
	}
	for i := 0; i < len(kept); i += 2 {
		if full := kept[i][:cap(kept[i])]; !bytes.Equal(full[:len(kept[i+1])], kept[i+1]) || bytes.ContainsFunc(full[len(kept[i+1]):], func(r rune) bool { return r != 0 }) {
			t.Fatalf("appended slice %d was written to", i/2)
		}
	}
	var held int64
	for _, c := range b.chunks {
		held += int64(cap(c))
	}
	if b.Cap() != held || b.Cap() < b.Len() {
		t.Errorf("Cap %d with %d bytes in chunks holding %d", b.Cap(), b.Len(), held)
	}
	got, err := io.ReadAll(io.NewSectionReader(b, 0, b.Len()))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read back %d bytes (err %v), want %d", len(got), err, len(want))
	}
	for range 100 {
		off := rnd.Int63n(int64(len(want)))
		p := make([]byte, rnd.Intn(9<<20))
		n, _ := b.ReadAt(p, off)
		if !bytes.Equal(p[:n], want[off:off+int64(n)]) || (n < len(p) && off+int64(n) != int64(len(want))) {
			t.Fatalf("ReadAt(%d, %d) = %d bytes, wrong", len(p), off, n)
		}
	}
	sum := sha256.Sum256(want)
	if b.Sum() != hex.EncodeToString(sum[:]) {
		t.Error("sha256 differs")
	}
}

func TestRanges(t *testing.T) {
	var r ranges
	for _, s := range []uint64{5, 6, 8, 7, 1, 3, 2, 10} {
		r = r.add(s)
	}
	if got, want := r.String(), "1-3,5-8,10"; got != want {
		t.Errorf("ranges %s, want %s", got, want)
	}
	p, err := parseRanges(r.String())
	if err != nil || p.String() != r.String() || !p.has(7) || p.has(4) || p.has(11) {
		t.Errorf("parseRanges: %v %v", p, err)
	}
	for _, bad := range []string{"x", "3-1", "1-", ","} {
		if _, err := parseRanges(bad); err == nil {
			t.Errorf("parseRanges(%q) accepted", bad)
		}
	}
}
