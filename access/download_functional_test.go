package access_test

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"io"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/capstream/capstream/schemas"
)

// pcapStream generates a nanosecond pcap of size bytes (header plus
// records of up to 64 KiB) without holding it in memory.
type pcapStream struct {
	left   int64
	buf    []byte
	off    int
	ts     int64
	header bool
}

func newPcapStream(size int64) *pcapStream { return &pcapStream{left: size} }

func (p *pcapStream) Read(b []byte) (int, error) {
	if p.off == len(p.buf) {
		if p.left == 0 {
			return 0, io.EOF
		}
		p.buf, p.off = p.buf[:0], 0
		if !p.header {
			p.header = true
			p.buf = schemas.AppendPcapHeader(p.buf, 1, schemas.MaxSnapLength)
		} else {
			n := min(p.left-16, 64<<10)
			var rec [16]byte
			binary.LittleEndian.PutUint32(rec[0:], uint32(p.ts/1e9))
			binary.LittleEndian.PutUint32(rec[4:], uint32(p.ts%1e9))
			binary.LittleEndian.PutUint32(rec[8:], uint32(n))
			binary.LittleEndian.PutUint32(rec[12:], uint32(n))
			p.ts += 1000
			p.buf = append(p.buf, rec[:]...)
			for i := range n {
				p.buf = append(p.buf, byte(i))
			}
		}
		p.buf = p.buf[:min(int64(len(p.buf)), p.left)]
		p.left -= int64(len(p.buf))
	}
	n := copy(b, p.buf[p.off:])
	p.off += n
	return n, nil
}

// rssBytes is the process's resident set size now.
func rssBytes() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// TestLargeDownloadBoundedMemory streams one large object (50 MiB;
// CAPSTREAM_TEST_ACCESS_DOWNLOAD_MB=1024 for the 1 GiB figure) through
// the API to a client that discards it, and samples the heap and RSS
// while it runs: the API holds one copy buffer per stream, not the
// object, so the growth does not depend on the size.
func TestLargeDownloadBoundedMemory(t *testing.T) {
	mb := int64(50)
	if v := os.Getenv("CAPSTREAM_TEST_ACCESS_DOWNLOAD_MB"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			t.Fatalf("CAPSTREAM_TEST_ACCESS_DOWNLOAD_MB=%q", v)
		}
		mb = n
	}
	size := mb << 20
	e := startAPI(t, nil)
	user := e.Kube.User(t)
	ns := e.Kube.Namespace(t, nil)
	uid := string(e.Kube.CreateCapture(t, ns, "big", `app == "big"`).GetUID())
	e.Kube.GrantCaptureFiles(t, ns, user.Name, "get")
	rel := "node-a/big-1_cali0123456789a/20261127T100000.000000000Z-1.pcap"
	h := sha256.New()
	if _, err := e.Bucket.Client.PutObject(t.Context(), e.Bucket.Bucket, schemas.CaptureDir("capstream", ns, "big", uid)+rel,
		io.TeeReader(newPcapStream(size), h), size, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	want := hex.EncodeToString(h.Sum(nil))

	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	heap0, rss0 := ms.HeapInuse, rssBytes()
	var peakHeap uint64
	var peakRSS int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			peakHeap = max(peakHeap, ms.HeapInuse)
			peakRSS = max(peakRSS, rssBytes())
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	})
	start := time.Now()
	req, _ := http.NewRequestWithContext(t.Context(), "GET", e.URL+capturePrefix(ns, "big")+"files/"+rel, nil)
	req.Header.Set("Authorization", "Bearer "+user.Token)
	resp, err := e.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got := sha256.New()
	n, err := io.CopyBuffer(got, resp.Body, make([]byte, 32<<10))
	resp.Body.Close()
	elapsed := time.Since(start)
	close(stop)
	wg.Wait()
	if err != nil || resp.StatusCode != http.StatusOK || n != size {
		t.Fatalf("download = %d, %d of %d bytes: %v", resp.StatusCode, n, size, err)
	}
	if sum := hex.EncodeToString(got.Sum(nil)); sum != want {
		t.Fatalf("downloaded sha256 %s, stored %s", sum, want)
	}
	heapGrowth := int64(peakHeap) - int64(heap0)
	rssGrowth := peakRSS - rss0
	t.Logf("downloaded %d MiB in %s (%.0f MiB/s): heap in use grew by at most %.1f MiB, RSS by at most %.1f MiB (from %.1f MiB); API and client in one process",
		mb, elapsed.Round(time.Millisecond), float64(mb)/elapsed.Seconds(), float64(heapGrowth)/(1<<20), float64(rssGrowth)/(1<<20), float64(rss0)/(1<<20))
	if heapGrowth > 32<<20 {
		t.Errorf("heap grew by %d MiB during a %d MiB download: the object is being buffered", heapGrowth>>20, mb)
	}
}
