package sink

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/capstream/capstream/schemas"
)

// CaptureKey names one capture on one node, the unit of a status report.
type CaptureKey struct {
	Namespace, Name, UID, Node string
}

// KeyOf is the capture and node of a batch.
func KeyOf(h *schemas.BatchHeader) CaptureKey {
	return CaptureKey{Namespace: h.Namespace, Name: h.Capture, UID: h.CaptureUID, Node: h.Node}
}

// maxLedgerKeys bounds the captures a Ledger remembers; beyond it the
// ledgerFreed that changed least recently are forgotten at once (their
// metrics stay), so forged captures cost one sort per ledgerFreed new
// keys rather than a scan per key.
const (
	maxLedgerKeys = 4096
	ledgerFreed   = maxLedgerKeys / 16
)

// Ledger is what a sink reports on each capture and node besides what it
// stored: its failures by reason and the batches and packets lost to the
// stream's limits, since the process started (the metrics are the durable
// counters). The loop goroutine records; reporters read from theirs.
type Ledger struct {
	mu sync.Mutex
	m  map[CaptureKey]*ledgerEntry
}

type ledgerEntry struct {
	failures     map[string]*schemas.Failure
	retrying     string // a transient failure being retried, "" when none
	lostBatches  uint64
	lostPackets  uint64
	changed      time.Time
	version      uint64 // bumped by every change
	reported     uint64 // version of the last report made by Due
	lastReported time.Time
}

func (l *Ledger) entry(k CaptureKey) *ledgerEntry {
	if l.m == nil {
		l.m = map[CaptureKey]*ledgerEntry{}
	}
	e := l.m[k]
	if e == nil {
		if len(l.m) >= maxLedgerKeys {
			l.evict()
		}
		e = &ledgerEntry{failures: map[string]*schemas.Failure{}}
		l.m[k] = e
	}
	e.changed = time.Now()
	e.version++
	return e
}

// evict forgets the ledgerFreed entries that changed least recently.
func (l *Ledger) evict() {
	keys := make([]CaptureKey, 0, len(l.m))
	for k := range l.m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return l.m[keys[i]].changed.Before(l.m[keys[j]].changed) })
	for _, k := range keys[:min(ledgerFreed, len(keys))] {
		delete(l.m, k)
	}
}

// Fail records batches lost to a failure of reason, with its message.
func (l *Ledger) Fail(k CaptureKey, reason string, batches uint64, msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.entry(k)
	f := e.failures[reason]
	if f == nil {
		if len(e.failures) >= schemas.MaxFailures {
			return // cannot happen with the four reasons; a bound all the same
		}
		f = &schemas.Failure{Reason: reason}
		e.failures[reason] = f
	}
	f.Batches += batches
	f.Message = schemas.ClipText(msg, schemas.MaxErrorLength)
}

// Retrying records that writes of the capture and node fail for now and
// are retried, with the error (msg "": they succeed again). It reports
// whether that changed what the next report says.
func (l *Ledger) Retrying(k CaptureKey, msg string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	msg = schemas.ClipText(msg, schemas.MaxErrorLength)
	if e := l.m[k]; e == nil && msg == "" || e != nil && e.retrying == msg {
		return false
	}
	l.entry(k).retrying = msg
	return true
}

// Lose records batches and packets the stream lost.
func (l *Ledger) Lose(k CaptureKey, batches, packets uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.entry(k)
	e.lostBatches += batches
	e.lostPackets += packets
}

// Fill sets the failures and losses of the report st from what the ledger
// holds for its capture and node, and reports whether there are any.
func (l *Ledger) Fill(st *schemas.Status) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.m[CaptureKey{Namespace: st.Namespace, Name: st.Name, UID: st.UID, Node: st.Node}]
	if e == nil {
		return false
	}
	st.Failures = st.Failures[:0]
	for _, f := range e.failures {
		st.Failures = append(st.Failures, *f)
	}
	sort.Slice(st.Failures, func(i, j int) bool { return st.Failures[i].Reason < st.Failures[j].Reason })
	st.LostBatches, st.LostPackets = e.lostBatches, e.lostPackets
	st.LastError = e.retrying
	return true
}

// Due returns the captures whose failures or losses changed since their
// last report and whose last report is at least every old, and counts
// them as reported now: at most one report per capture and node per
// every.
func (l *Ledger) Due(now time.Time, every time.Duration) []CaptureKey {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []CaptureKey
	for k, e := range l.m {
		if e.version != e.reported && now.Sub(e.lastReported) >= every {
			e.reported, e.lastReported = e.version, now
			out = append(out, k)
		}
	}
	return out
}

// PublishReport publishes a sink's status report on its ReportSubject.
func PublishReport(ctx context.Context, js jetstream.JetStream, st *schemas.Status) error {
	body, err := schemas.EncodeStatus(st)
	if err != nil {
		return err
	}
	subj, err := schemas.ReportSubject(st)
	if err != nil {
		return err
	}
	if _, err := js.Publish(ctx, subj, body); err != nil {
		return fmt.Errorf("publish status %s: %w", subj, err)
	}
	return nil
}
