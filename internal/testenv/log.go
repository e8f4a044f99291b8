package testenv

import (
	"io"
	"log/slog"
	"sync"
	"testing"
)

// Logger is the logger a test hands to the component it runs: its lines go
// to the test's output (shown with -v or when the test fails) at Info, or
// at Warn for a benchmark, whose output people read. Lines logged after the
// test's cleanups ran (a goroutine that outlived its component) are dropped
// instead of panicking the test binary.
func Logger(tb testing.TB) *slog.Logger {
	level := slog.LevelInfo
	if _, ok := tb.(*testing.B); ok {
		level = slog.LevelWarn
	}
	w := &testWriter{out: tb.Output()}
	tb.Cleanup(w.close)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// testWriter writes to a test's output until close.
type testWriter struct {
	mu     sync.Mutex
	out    io.Writer
	closed bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return len(p), nil
	}
	return w.out.Write(p)
}

func (w *testWriter) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
}
