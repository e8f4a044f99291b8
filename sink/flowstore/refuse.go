package flowstore

import (
	"context"
	"time"

	"github.com/capstream/capstream/schemas"
	"github.com/capstream/capstream/sink"
)

// refuse gives up a flush that ClickHouse refused for good (a schema or
// type error: the same rows can never be inserted). The unit is the flush,
// the narrowest one ClickHouse answers for: one block, or one INSERT ...
// SELECT, is refused whole. Its records (every record released since the
// last successful flush, of every interface in it) are dropped, and the
// held batches with packets in them, those that start before their
// interface's floor, are terminated and counted; their packets after the
// floor are still aggregated and inserted, without a batch to ack.
// Batches with no packet released yet stay held. The sink then goes on
// with the next flush.
func (s *Sink) refuse(table, reason string, err error) {
	s.m.insertErrs.WithLabelValues(table).Inc()
	keys := map[StreamKey]sink.CaptureKey{}
	for i := range s.unsent {
		r := &s.unsent[i]
		keys[StreamKey{CaptureUID: r.CaptureUID, Node: r.Node, Interface: r.Interface}] = sink.CaptureKey{
			Namespace: r.Namespace, Name: r.Capture, UID: r.CaptureUID, Node: r.Node,
		}
	}
	records := len(s.unsent)
	s.unsent, s.committed, s.flushID, s.staged = nil, nil, 0, 0
	terminated := map[sink.CaptureKey]int{}
	for k, ck := range keys {
		floor := s.table.Floor(k)
		bs := s.pending[k]
		kept := bs[:0]
		for _, b := range bs {
			if b.minTs >= floor {
				kept = append(kept, b)
				continue
			}
			s.run.Term(b.reply)
			delete(s.bySeq, b.seq)
			s.npend--
			terminated[ck]++
		}
		if len(kept) == 0 {
			delete(s.pending, k)
			s.table.Forget(k)
		} else {
			s.pending[k] = kept
		}
	}
	total := 0
	for ck, n := range terminated {
		h := schemas.BatchHeader{Namespace: ck.Namespace, Capture: ck.Name, CaptureUID: ck.UID, Node: ck.Node}
		s.run.Refused(&h, reason, n, err)
		total += n
	}
	s.setPending()
	// Go on at once: what is left (commit rows of the batches still held,
	// records released meanwhile) is the next flush's.
	s.retryAt = time.Now()
	s.run.Logger().Warn("clickhouse refused a flush for good; dropped its records and terminated their batches",
		"table", table, "reason", reason, "records", records, "batches", total, "interfaces", len(keys), "error", err)
}

// reportEvery is the least time between two reports of one capture and
// node.
const reportEvery = time.Second

// reporter publishes a SourceFlowSink report for each capture and node
// whose failures or losses changed, at most one per reportEvery, until ctx
// ends.
func (s *Sink) reporter(ctx context.Context) error {
	t := time.NewTicker(reportEvery / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			for _, k := range s.run.Ledger.Due(now, reportEvery) {
				if err := s.publishStatus(ctx, k, now); err != nil && ctx.Err() == nil {
					s.m.statusErrs.Inc()
					s.run.Logger().Warn("status report failed", "error", err)
				}
			}
		}
	}
}

// publishStatus reports the failures and losses of one capture on one
// node, since this process started.
func (s *Sink) publishStatus(ctx context.Context, k sink.CaptureKey, now time.Time) error {
	st := schemas.Status{
		Source: schemas.SourceFlowSink, Namespace: k.Namespace, Name: k.Name, UID: k.UID, Node: k.Node,
		State: schemas.StateCapturing, Time: now.UTC(),
	}
	s.run.Ledger.Fill(&st)
	return sink.PublishReport(ctx, s.deps.JetStream, &st)
}
