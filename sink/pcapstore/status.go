package pcapstore

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/capstream/capstream/schemas"
	"github.com/capstream/capstream/sink"
)

// publishStatus reports the objects of one capture on one node on its
// status subject, for the router to copy into PacketCapture.status.files.
// Totals and the recent object names are read from pcap_objects rather
// than counted here, so they stay totals across restarts and replicas
// (each report is complete; the latest wins); the failures and losses are
// this process's since it started (sink.Ledger). It runs in the reporter
// goroutine after an object is indexed and its batches acked, or after a
// failure or a loss, h being the header of a batch of the capture and
// node; a failure is logged and the next object reports again.
func (s *Sink) publishStatus(ctx context.Context, h *schemas.BatchHeader) error {
	// The directory the objects are under (the capture's UID in it), so
	// the names relative to it are "<pod>_<iface>/<file>.pcap".
	dir := nodeDir(s.cfg.Prefix, h)
	st := schemas.Status{
		Source: schemas.SourcePcapSink, Namespace: h.Namespace, Name: h.Capture, UID: h.CaptureUID,
		Node: h.Node, State: schemas.StateCapturing, Directory: "s3://" + s.cfg.S3.Bucket + "/" + dir,
		Time: time.Now().UTC(),
	}
	if len(st.Directory) > schemas.MaxObjectNameLength {
		st.Directory = "" // a long prefix and long names; the objects still say where
	}
	// Failures and losses are this process's, since it started.
	s.run.Ledger.Fill(&st)
	row := s.deps.ClickHouse.QueryRow(ctx, "SELECT sum(packets), sum(size), count() FROM pcap_objects FINAL WHERE capture_uid = ? AND node = ?", h.CaptureUID, h.Node)
	if err := row.Scan(&st.Packets, &st.Bytes, &st.ObjectCount); err != nil {
		return fmt.Errorf("read totals of %s/%s on %s: %w", h.Namespace, h.Capture, h.Node, err)
	}
	rows, err := s.deps.ClickHouse.Query(ctx, fmt.Sprintf("SELECT key FROM pcap_objects FINAL WHERE capture_uid = ? AND node = ? ORDER BY first_time DESC, first_ns DESC LIMIT %d", schemas.MaxStatusObjects), h.CaptureUID, h.Node)
	if err != nil {
		return fmt.Errorf("read objects of %s/%s on %s: %w", h.Namespace, h.Capture, h.Node, err)
	}
	defer rows.Close()
	for rows.Next() {
		var key string
		if err := rows.Scan(&key); err != nil {
			return fmt.Errorf("read objects: %w", err)
		}
		if name := strings.TrimPrefix(key, dir); len(name) <= schemas.MaxObjectNameLength {
			st.Objects = append(st.Objects, name)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read objects: %w", err)
	}
	// Interfaces from the object names: "<pod>_<iface>/...".
	seen := map[string]bool{}
	for _, name := range st.Objects {
		d, _, _ := strings.Cut(name, "/")
		if i := strings.LastIndexByte(d, '_'); i >= 0 && !seen[d[i+1:]] {
			seen[d[i+1:]] = true
			st.Interfaces = append(st.Interfaces, d[i+1:])
		}
	}
	return sink.PublishReport(ctx, s.deps.JetStream, &st)
}
