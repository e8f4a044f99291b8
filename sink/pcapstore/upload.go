package pcapstore

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/minio/minio-go/v7"

	"github.com/capstream/capstream/schemas"
	"github.com/capstream/capstream/sink"
)

// uploader is one of the sink's uploader goroutines: it asks the loop for a
// sealed object and uploads it, then hands it to the indexer (or a failed
// upload back to the loop), until the loop ends. It does not wait for the
// index row: the indexer inserts the rows of many uploads at once.
func (s *Sink) uploader(ctx context.Context) error {
	work := make(chan *object, 1)
	ready := func() {
		s.idle = append(s.idle, work)
		s.dispatch()
	}
	for s.run.Do(ready) {
		var o *object
		select {
		case o = <-work:
		case <-ctx.Done():
			return nil
		}
		s.putting.Add(1)
		sum, err := s.upload(ctx, o)
		s.putting.Add(-1)
		if err == nil {
			select {
			case s.indexQ <- uploaded{o: o, row: o.row(sum)}:
				continue
			case <-ctx.Done():
				err = fmt.Errorf("index %s: %w", o.name, ctx.Err())
			}
		}
		if !s.run.Do(func() { s.finish(o, err) }) {
			return nil
		}
	}
	return nil
}

// reporter is the status reporter goroutine: it asks the loop for the next
// capture and node to report, and reports it, until the loop ends.
func (s *Sink) reporter(ctx context.Context) error {
	next := make(chan schemas.BatchHeader, 1)
	ready := func() {
		s.reporting, s.reportC = false, next
		s.dispatch()
	}
	for s.run.Do(ready) {
		var h schemas.BatchHeader
		select {
		case h = <-next:
		case <-ctx.Done():
			return nil
		}
		if err := s.publishStatus(ctx, &h); err != nil {
			s.m.errs.WithLabelValues("status").Inc()
			s.log.Warn("status report failed", "error", err)
		}
	}
	return nil
}

// upload runs in an uploader goroutine: it writes the object and returns
// its SHA-256 for the index row. It reads only what the loop no longer
// changes once o is sealed.
func (s *Sink) upload(ctx context.Context, o *object) (string, error) {
	if len(o.name) > schemas.MaxObjectNameLength {
		// minio-go refuses it before asking the server, with an error of
		// its own: name the refusal here.
		return "", fmt.Errorf("put object %s: key of %d bytes, more than %d: %w", o.name, len(o.name), schemas.MaxObjectNameLength, sink.ErrStorageRefused)
	}
	sum := o.buf.Sum()
	// One PutObject with the full metadata: user metadata is fixed when an
	// upload starts, and it must describe the whole object. minio-go
	// streams it straight from the buffer, in one PUT up to PartSize and
	// in parallel multipart parts of PartSize beyond.
	_, err := s.deps.S3.PutObject(ctx, s.cfg.S3.Bucket, o.name, io.NewSectionReader(o.buf, 0, o.buf.Len()), o.buf.Len(), minio.PutObjectOptions{
		ContentType:  "application/vnd.tcpdump.pcap",
		UserMetadata: o.metadata(sum),
		PartSize:     s.cfg.PartSize,
		// The body's SHA-256 is in the metadata already; skipping the
		// payload hash of the signature saves a pass over every byte.
		// S3 servers accept UNSIGNED-PAYLOAD.
		DisableContentSha256: true,
	})
	if err != nil {
		s.m.errs.WithLabelValues("put").Inc()
		return "", fmt.Errorf("put object %s: %w", o.name, err)
	}
	return sum, nil
}

// uploaded is an object in S3 waiting for its pcap_objects row.
type uploaded struct {
	o   *object
	row indexRow
}

// maxIndexRows bounds the rows of one INSERT, and indexLinger how long
// the indexer waits for the rows of uploads still in progress.
const (
	maxIndexRows = 1024
	indexLinger  = 100 * time.Millisecond
)

// indexer inserts the rows of uploaded objects, several per INSERT, then
// hands the objects to the loop, which acks their batches: a row is
// written only after its object is complete, and the batches are acked
// only after that. ClickHouse spends about the same CPU on an insert of
// one row as of hundreds (a part each, 15 ms of its CPU on this machine),
// so at many interfaces, where objects complete by the hundred per
// second, the rows share inserts instead of costing one each: an insert
// takes every row waiting, and while uploads are in progress it waits up
// to indexLinger for their rows too. With no upload in progress (the last
// object of a stopped capture, say) it inserts at once. It runs until ctx
// ends.
func (s *Sink) indexer(ctx context.Context) error {
	linger := time.NewTimer(indexLinger)
	linger.Stop()
	for {
		var batch []uploaded
		select {
		case r := <-s.indexQ:
			batch = append(batch, r)
		case <-ctx.Done():
			return nil
		}
		linger.Reset(indexLinger)
	more:
		for len(batch) < maxIndexRows {
			select {
			case r := <-s.indexQ:
				batch = append(batch, r)
				continue
			default:
			}
			if s.putting.Load() == 0 {
				break more
			}
			select {
			case r := <-s.indexQ:
				batch = append(batch, r)
			case <-linger.C:
				break more
			case <-ctx.Done():
				break more // the insert fails, and the loop hears it
			}
		}
		linger.Stop()
		rows := make([]indexRow, len(batch))
		for i, r := range batch {
			rows[i] = r.row
		}
		err := insertIndexRows(ctx, s.deps.ClickHouse, s.cfg.S3.Bucket, rows)
		if err != nil {
			s.m.errs.WithLabelValues("index").Inc()
			err = fmt.Errorf("index %d objects: %w", len(rows), err)
		}
		s.m.indexRows.Observe(float64(len(rows)))
		if !s.run.Do(func() {
			for _, r := range batch {
				s.finish(r.o, err)
			}
		}) {
			return nil
		}
	}
}

// sweep aborts multipart uploads under the prefix that are older than
// StaleUploadAge: they were left by a sink that died mid-upload. A live
// upload lasts one PutObject call, far shorter than that age, so a sweep by
// one replica never aborts another's upload.
func (s *Sink) sweep(ctx context.Context) error {
	cutoff := time.Now().Add(-s.cfg.StaleUploadAge)
	for u := range s.deps.S3.ListIncompleteUploads(ctx, s.cfg.S3.Bucket, s.cfg.Prefix+"/", true) {
		if u.Err != nil {
			return fmt.Errorf("list incomplete uploads: %w", u.Err)
		}
		if u.Initiated.After(cutoff) {
			continue
		}
		// Abort by upload ID: RemoveIncompleteUpload would abort every
		// upload of the key, including a live one rebuilding it.
		core := minio.Core{Client: s.deps.S3}
		if err := core.AbortMultipartUpload(ctx, s.cfg.S3.Bucket, u.Key, u.UploadID); err != nil {
			return fmt.Errorf("abort upload %s: %w", u.Key, err)
		}
		s.log.Info("aborted stale upload", "key", u.Key, "initiated", u.Initiated)
	}
	return nil
}

const insertObject = `INSERT INTO pcap_objects (namespace, capture, capture_uid, node, pod, interface, bucket, key,
 size, packets, first_time, first_ns, last_time, last_ns, first_seq, last_seq, link_type, sha256)`

// insertIndexRows writes pcap_objects rows through PrepareBatch with the
// columns named (an INSERT ... VALUES through Exec hangs on 18.16).
func insertIndexRows(ctx context.Context, conn driver.Conn, bucket string, rows []indexRow) error {
	b, err := conn.PrepareBatch(ctx, insertObject)
	if err != nil {
		return fmt.Errorf("prepare pcap_objects insert: %w", err)
	}
	for _, r := range rows {
		ft, fns := time.Unix(r.FirstTs/1e9, 0).UTC(), uint32(r.FirstTs%1e9)
		lt, lns := time.Unix(r.LastTs/1e9, 0).UTC(), uint32(r.LastTs%1e9)
		if err := b.Append(r.Namespace, r.Capture, r.UID, r.Node, r.Pod, r.Interface, bucket, r.Key,
			r.Size, r.Packets, ft, fns, lt, lns, r.FirstSeq, r.LastSeq, r.LinkType, r.SHA256); err != nil {
			_ = b.Abort()
			return fmt.Errorf("append pcap_objects row %s: %w", r.Key, err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("insert %d pcap_objects rows: %w", len(rows), err)
	}
	return nil
}
