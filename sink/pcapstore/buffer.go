package pcapstore

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"sort"
)

// Chunk sizes of an object's buffer: the first is small so thousands of
// quiet interfaces cost little, later ones double up to the largest so a
// big object never copies what it already holds (append on one slice would
// copy it again at every growth).
const (
	minChunk = 16 << 10
	maxChunk = 4 << 20
)

// buffer holds an object's bytes in chunks. It is an io.ReaderAt, so
// minio-go uploads its parts in parallel straight from memory.
type buffer struct {
	chunks [][]byte
	starts []int64 // offset of each chunk
	size   int64
	cap    int64 // bytes the chunks hold, spare room included
}

func newBuffer() *buffer { return &buffer{} }

// Write appends p; it never fails.
func (b *buffer) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		last := len(b.chunks) - 1
		if last < 0 || len(b.chunks[last]) == cap(b.chunks[last]) {
			c := int64(minChunk)
			if b.size > c {
				c = min(b.size, maxChunk)
			}
			b.chunks = append(b.chunks, make([]byte, 0, c))
			b.starts = append(b.starts, b.size)
			b.cap += c
			last++
		}
		ch := b.chunks[last]
		k := min(len(p), cap(ch)-len(ch))
		b.chunks[last] = append(ch, p[:k]...)
		b.size += int64(k)
		p = p[k:]
	}
	return n, nil
}

// minRetain is the smallest slice Append keeps instead of copying: a full
// batch body is kept as it came off the wire, while small ones are packed
// into chunks so quiet interfaces do not hold many tiny slices.
const minRetain = 64 << 10

// Append adds p like Write, but keeps a large p itself rather than a copy:
// the caller must never change p afterwards. A batch body from the client
// is a fresh slice per message, so the sink keeps it and saves one copy
// of every byte.
func (b *buffer) Append(p []byte) {
	if len(p) < minRetain {
		_, _ = b.Write(p)
		return
	}
	// A full slice expression: a later Write must start a new chunk, never
	// fill p's spare capacity.
	b.chunks = append(b.chunks, p[:len(p):len(p)])
	b.starts = append(b.starts, b.size)
	b.size += int64(len(p))
	b.cap += int64(len(p))
}

// Cap is the memory the buffer holds: its bytes plus the spare room of
// its chunks.
func (b *buffer) Cap() int64 { return b.cap }

// Len is the number of bytes held.
func (b *buffer) Len() int64 { return b.size }

// Sum is the hex SHA-256 of everything written. The uploader computes it
// once the object is sealed, so hashing, the largest cost per byte, runs
// beside the loop that takes in batches instead of inside it.
func (b *buffer) Sum() string {
	h := sha256.New()
	for _, c := range b.chunks {
		h.Write(c)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// ReadAt implements io.ReaderAt.
func (b *buffer) ReadAt(p []byte, off int64) (int, error) {
	if off >= b.size {
		return 0, io.EOF
	}
	i := sort.Search(len(b.starts), func(i int) bool { return b.starts[i] > off }) - 1
	n := 0
	for n < len(p) && i < len(b.chunks) {
		ch := b.chunks[i][off-b.starts[i]:]
		k := copy(p[n:], ch)
		n += k
		off += int64(k)
		i++
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
