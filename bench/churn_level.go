package main

// The churn phase's levels: the commands stream and both processes'
// memory, at the start, at their peak and at the end (churn.go).

import (
	"context"
	"fmt"
	"time"

	"github.com/capstream/capstream/schemas"
)

// level waits until CAPSTREAM_COMMANDS holds at most want messages
// (bounded by churnStopTTL plus -timeout; drained says whether it got
// there), then for a producer resync, then for two collections in each
// child, and reads every figure.
func (e *churnEnv) level(ctx context.Context, want uint64) (l churnLevel, drained bool, err error) {
	deadline := time.Now().Add(churnStopTTL + e.o.Timeout)
	for {
		msgs, _, err := e.commands(ctx)
		if err != nil {
			return l, false, err
		}
		if msgs <= want {
			drained = true
			break
		}
		if time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return l, false, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	// A resync after the last expiry drops the producer's finished
	// captures; the router forgets a stop within a second of its expiry.
	select {
	case <-ctx.Done():
		return l, false, ctx.Err()
	case <-time.After(churnResync + time.Second):
	}
	if err := settleGC(ctx, e.router, e.producer); err != nil {
		return l, drained, err
	}
	if l.Msgs, l.Bytes, err = e.commands(ctx); err != nil {
		return l, drained, err
	}
	for _, p := range []struct {
		c  *proc
		to *churnProc
	}{{e.router, &l.Router}, {e.producer, &l.Producer}} {
		p.to.Live, p.to.GCs = p.c.lastLive()
		p.to.HeapInuse, p.to.Goroutines, p.to.RSS = p.c.memory()
	}
	l.At = time.Since(e.t0)
	return l, drained, nil
}

// settleRSS lowers l's RSS figures to the lowest VmRSS sampled every
// second, until neither child made a new low for churnRSSQuiet or
// churnRSSWait passed.
func (e *churnEnv) settleRSS(ctx context.Context, l *churnLevel) error {
	deadline, lastLow := time.Now().Add(churnRSSWait), time.Now()
	for time.Since(lastLow) < churnRSSQuiet && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
		for _, p := range []struct {
			c  *proc
			to *churnProc
		}{{e.router, &l.Router}, {e.producer, &l.Producer}} {
			rss, _, err := procMem(p.c.pid())
			if err != nil {
				return fmt.Errorf("%s: %w", p.c.name, err)
			}
			if rss < p.to.RSS {
				p.to.RSS, lastLow = rss, time.Now()
			}
		}
	}
	return nil
}

// commands returns CAPSTREAM_COMMANDS's messages and bytes.
func (e *churnEnv) commands(ctx context.Context) (msgs, bytes uint64, err error) {
	s, err := e.js.Stream(ctx, schemas.StreamCommands)
	if err != nil {
		return 0, 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, 0, err
	}
	return info.State.Msgs, info.State.Bytes, nil
}

// sample folds the current figures into the peaks.
func (e *churnEnv) sample(ctx context.Context) {
	msgs, bytes, err := e.commands(ctx)
	var procs [2]churnProc
	for i, c := range []*proc{e.router, e.producer} {
		procs[i].Live, _ = c.peakLive()
		procs[i].HeapInuse, procs[i].Goroutines, procs[i].RSS = c.memory()
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if err == nil {
		e.peak.Msgs, e.peak.Bytes = max(e.peak.Msgs, msgs), max(e.peak.Bytes, bytes)
	}
	for i, to := range []*churnProc{&e.peak.Router, &e.peak.Producer} {
		to.Live = max(to.Live, procs[i].Live)
		to.HeapInuse = max(to.HeapInuse, procs[i].HeapInuse)
		to.Goroutines = max(to.Goroutines, procs[i].Goroutines)
		to.RSS = max(to.RSS, procs[i].RSS)
	}
}
