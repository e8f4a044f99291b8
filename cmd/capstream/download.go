package main

// Downloading a capture's objects, from the access API or S3: the
// directory, each object verified through a temp file, the progress, and
// the merge.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/capstream/capstream/internal/pcapmerge"
	"github.com/capstream/capstream/internal/pcapobjects"
	"github.com/capstream/capstream/schemas"
)

// mergeFanIn is how many objects copy --merge reads at once; more are
// merged in rounds (pcapmerge.MergeFiles). Tests lower it.
var mergeFanIn = pcapmerge.MaxOpen

// opener opens one object for reading.
type opener func(ctx context.Context, o pcapobjects.Object) (io.ReadCloser, error)

// copyObjects downloads objs, whose keys are under base, into r.dir
// keeping their layout below base, or with --merge into one pcap there,
// and says what was done.
func copyObjects(ctx context.Context, stdout, stderr io.Writer, r copyRequest, uid, base string, objs []pcapobjects.Object, open opener) error {
	out, err := prepareCopyDir(r.dir, r.namespace, r.name, r.merge)
	if err != nil {
		return err
	}
	var total int64
	for _, o := range objs {
		total += o.Size
	}
	p := newProgress(stderr, total, len(objs), r.quiet)
	partsDir := r.dir
	if r.merge {
		if partsDir, err = os.MkdirTemp(r.dir, ".parts-"); err != nil {
			return err
		}
		defer os.RemoveAll(partsDir)
	}
	var files []string
	for _, o := range objs {
		// The API checks keys; a hostile or broken server (or bucket) is
		// checked here too before a key becomes a path.
		rel := strings.TrimPrefix(o.Key, base)
		if strings.Contains(rel, "..") || filepath.IsAbs(rel) || strings.HasPrefix(rel, "/") {
			return fmt.Errorf("object key %q escapes the download directory", o.Key)
		}
		dst := filepath.Join(partsDir, filepath.FromSlash(rel))
		if err := download(ctx, o, dst, p, open); err != nil {
			return err
		}
		files = append(files, dst)
	}
	p.done()
	return finishCopy(stdout, files, total, uid, r.dir, out, r.merge)
}

// download fetches one object to dst through a temp file, verifying the
// size and, when recorded, the SHA-256, so a partial file never takes the
// final name.
func download(ctx context.Context, o pcapobjects.Object, dst string, p *progress, open opener) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	obj, err := open(ctx, o)
	if err != nil {
		return err
	}
	defer obj.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".download-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h, p), obj)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("download %s: %w", o.Key, err)
	}
	if n != o.Size {
		return fmt.Errorf("download %s: got %d bytes, want %d", o.Key, n, o.Size)
	}
	if sum := hex.EncodeToString(h.Sum(nil)); o.SHA256 != "" && !strings.EqualFold(sum, o.SHA256) {
		return fmt.Errorf("download %s: sha256 %s, the sink recorded %s", o.Key, sum, o.SHA256)
	}
	p.object()
	return os.Rename(tmp.Name(), dst)
}

// prepareCopyDir makes the download directory and names the merged
// output, checked before anything is downloaded: bounded like a key
// segment (a 253-byte name plus its namespace is longer than a file name
// may be), not a directory, in a directory that takes files.
func prepareCopyDir(dir, namespace, name string, merge bool) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", usageError{Err: fmt.Errorf("-d %s: %w", dir, err)}
	}
	out := filepath.Join(dir, schemas.Shorten(namespace+"_"+name, 255-len(".pcap"))+".pcap")
	if merge {
		if err := pcapmerge.CheckOutput(out); err != nil {
			return "", usageError{Err: fmt.Errorf("--merge: %w", err)}
		}
	}
	return out, nil
}

// finishCopy merges the downloaded files with --merge and says what was
// done.
func finishCopy(stdout io.Writer, files []string, total int64, uid, dir, out string, merge bool) error {
	if !merge {
		fmt.Fprintf(stdout, "downloaded %d objects (%s) of capture uid %s to %s\n", len(files), humanBytes(total), uid, dir)
		return nil
	}
	st, err := pcapmerge.MergeFiles(out, files, mergeFanIn)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "merged %d objects, %d packets, of capture uid %s into %s\n", len(files), st.Packets, uid, out)
	return nil
}

// progress reports download progress: a redrawn bar on a terminal, a line
// every few seconds otherwise (so CI logs stay short).
type progress struct {
	mu        sync.Mutex
	w         io.Writer
	tty       bool
	quiet     bool
	total     int64
	doneBytes int64
	objects   int
	nobj      int
	start     time.Time
	last      time.Time
}

func newProgress(w io.Writer, total int64, objects int, quiet bool) *progress {
	tty := false
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	return &progress{w: w, tty: tty, quiet: quiet, total: total, nobj: objects, start: time.Now()}
}

// Write counts downloaded bytes.
func (p *progress) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.doneBytes += int64(len(b))
	p.draw(false)
	return len(b), nil
}

func (p *progress) object() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.objects++
	p.draw(true)
}

func (p *progress) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.quiet {
		return
	}
	if p.tty {
		fmt.Fprintln(p.w)
	}
}

func (p *progress) draw(force bool) {
	if p.quiet {
		return
	}
	now := time.Now()
	every := 3 * time.Second
	if p.tty {
		every = 100 * time.Millisecond
	}
	if !force && now.Sub(p.last) < every {
		return
	}
	if !p.tty && force && p.objects != p.nobj && now.Sub(p.last) < every {
		return
	}
	p.last = now
	pct := 100.0
	if p.total > 0 {
		pct = float64(p.doneBytes) * 100 / float64(p.total)
	}
	rate := float64(p.doneBytes) / max(now.Sub(p.start).Seconds(), 0.001)
	line := fmt.Sprintf("%3.0f%% %s/%s  %d/%d objects  %s/s", pct, humanBytes(p.doneBytes), humanBytes(p.total), p.objects, p.nobj, humanBytes(int64(rate)))
	if p.tty {
		const width = 30
		filled := int(pct / 100 * width)
		fmt.Fprintf(p.w, "\r[%s%s] %s", strings.Repeat("=", filled), strings.Repeat(" ", width-filled), line)
		return
	}
	fmt.Fprintln(p.w, "download: "+line)
}
