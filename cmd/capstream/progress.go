package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

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
