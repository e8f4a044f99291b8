package pcapstore

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/schemas"
	"github.com/capstream/capstream/sink/sinktest"
)

// waitReport returns the first pcap sink report on h's status subject that
// ok accepts, watching from before publish.
func waitReport(t *testing.T, e *env, h schemas.BatchHeader, publish func(), ok func(*schemas.Status) error) *schemas.Status {
	t.Helper()
	w := sinktest.WatchReports(t, e.NATS.Conn, h)
	publish()
	return w.Wait(t, schemas.SourcePcapSink, ok)
}

func storageRefused(batches int) func(*schemas.Status) error {
	return func(st *schemas.Status) error {
		for _, f := range st.Failures {
			if f.Reason == schemas.FailureStorageRefused && f.Batches == uint64(batches) && f.Message != "" {
				return nil
			}
		}
		return fmt.Errorf("failures %+v, want %s for %d batches", st.Failures, schemas.FailureStorageRefused, batches)
	}
}

// An object the server refuses for good (on versitygw's file-system
// backend, a key that is a directory there) is dropped: its batches are
// terminated, counted and reported on its capture, and another capture's
// batches in the same run are stored.
func TestFunctionalPcapObjectRefused(t *testing.T) {
	e := setup(t)
	cfg := e.config()
	_, all := traffic(t, 20)
	bad := sinktest.EndRun(all[:2], false)
	for i := range bad {
		bad[i].Header.Capture, bad[i].Header.CaptureUID = "refused", "uid-refused"
	}
	good := sinktest.EndRun(all[2:4], false)
	// The refused capture's object is the first in the stream (stream
	// sequence 1); a directory in its place makes the server refuse it.
	first, _ := bodyTimes(bad[0].Body)
	key := objectName(cfg.Prefix, &bad[0].Header, first, 1)
	if _, err := e.s3.Client.PutObject(t.Context(), e.s3.Bucket, key+"/blocker", bytes.NewReader([]byte("x")), 1, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	in := start(t, e, cfg)
	st := waitReport(t, e, bad[0].Header, func() {
		if err := sinktest.Publish(t.Context(), e.NATS.JS, append(bad, good...)); err != nil {
			t.Fatal(err)
		}
	}, storageRefused(len(bad)))
	if st.UID != "uid-refused" || st.ObjectCount != 0 || len(st.Objects) != 0 {
		t.Errorf("report of the refused capture: %+v", st)
	}
	waitDrained(t, e, 20*time.Second)
	if got := in.Metric("capstream_sink_pcap_failures_total", map[string]string{"reason": schemas.FailureStorageRefused}); got != float64(len(bad)) {
		t.Errorf("failures metric = %v, want %d", got, len(bad))
	}
	if got := in.Metric("capstream_sink_pcap_batches_total", map[string]string{"result": "terminated"}); got != float64(len(bad)) {
		t.Errorf("terminated = %v, want %d", got, len(bad))
	}
	// The other capture: bytes in S3, rows in pcap_objects, and its report
	// counts them.
	var rows, objects uint64
	testenv.Eventually(t, 10*time.Second, func() error {
		if err := e.DB.Conn.QueryRow(t.Context(), "SELECT count() FROM pcap_objects FINAL WHERE capture_uid = ?", good[0].Header.CaptureUID).Scan(&rows); err != nil {
			return err
		}
		if rows == 0 {
			return errors.New("no index rows of the other capture yet")
		}
		return nil
	})
	for info := range e.s3.Client.ListObjects(t.Context(), e.s3.Bucket, minio.ListObjectsOptions{Prefix: ifaceDir(cfg.Prefix, &good[0].Header), Recursive: true}) {
		if info.Err != nil {
			t.Fatal(info.Err)
		}
		if info.Size > int64(schemas.PcapHeaderLen) {
			objects++
		}
	}
	if objects != rows {
		t.Errorf("%d objects of the other capture in S3, %d index rows", objects, rows)
	}
	var refusedRows uint64
	if err := e.DB.Conn.QueryRow(t.Context(), "SELECT count() FROM pcap_objects WHERE capture_uid = 'uid-refused'").Scan(&refusedRows); err != nil || refusedRows != 0 {
		t.Errorf("%d index rows of the refused capture (%v), want 0", refusedRows, err)
	}
	in.Stop()
}

// A bucket that does not exist refuses every object for good: the sink
// terminates, counts and reports instead of retrying forever.
func TestFunctionalPcapNoSuchBucket(t *testing.T) {
	e := setup(t)
	cfg := e.config()
	cfg.S3.Bucket = e.s3.Bucket + "-missing"
	_, all := traffic(t, 20)
	batches := sinktest.EndRun(all[:3], false)
	in := start(t, e, cfg)
	st := waitReport(t, e, batches[0].Header, func() {
		if err := sinktest.Publish(t.Context(), e.NATS.JS, batches); err != nil {
			t.Fatal(err)
		}
	}, storageRefused(len(batches)))
	if err := st.Validate(); err != nil {
		t.Error(err)
	}
	waitDrained(t, e, 20*time.Second)
	if got := in.Metric("capstream_sink_pcap_failures_total", map[string]string{"reason": schemas.FailureStorageRefused}); got != float64(len(batches)) {
		t.Errorf("failures metric = %v, want %d", got, len(batches))
	}
	in.Stop()
}

// A bucket that refuses one capture's writes for a while (503 SlowDown on
// its keys for sinktest.Outage(), 30 s) puts that capture's report in a
// retrying state while another capture's objects land whole; once writes
// are accepted again every packet of both is stored exactly once and the
// report clears.
func TestFunctionalPcapOneCaptureRefusedForAWhile(t *testing.T) {
	outage, _ := sinktest.Outage()
	e := setup(t)
	gate := sinktest.NewS3Gate(t, e.s3.Config())
	cfg := e.config()
	cfg.S3.Endpoint, cfg.S3.TLS.CAFile = gate.Addr, gate.CAFile
	in, all := traffic(t, 20)
	slow := make([]sinktest.Batch, len(all))
	copy(slow, all)
	for i := range slow {
		slow[i].Header.Capture, slow[i].Header.CaptureUID = "slow", "uid-slow"
	}
	slow = sinktest.EndRun(slow, false)
	fast := sinktest.EndRun(append([]sinktest.Batch(nil), all...), false)
	var packets uint64
	for _, b := range all {
		packets += uint64(b.Header.Packets)
	}
	gate.Block("/" + fast[0].Header.Namespace + "/slow/")
	s := start(t, e, cfg)
	w := sinktest.WatchReports(t, e.NATS.Conn, slow[0].Header)
	blocked := time.Now()
	if err := sinktest.Publish(t.Context(), e.NATS.JS, append(slow, fast...)); err != nil {
		t.Fatal(err)
	}
	w.Wait(t, schemas.SourcePcapSink, func(st *schemas.Status) error {
		if !strings.Contains(st.LastError, "retrying") || !strings.Contains(st.LastError, "reduce your request rate") {
			return fmt.Errorf("lastError %q, want the retried SlowDown", st.LastError)
		}
		return nil
	})
	stored := func(uid string) uint64 {
		var n uint64
		if err := e.DB.Conn.QueryRow(t.Context(), "SELECT sum(packets) FROM pcap_objects FINAL WHERE capture_uid = ?", uid).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	// Waiting for: the other capture stored whole while the first is refused.
	testenv.Eventually(t, outage, func() error {
		if n := stored(fast[0].Header.CaptureUID); n != packets {
			return fmt.Errorf("other capture: %d of %d packets indexed", n, packets)
		}
		return nil
	})
	time.Sleep(time.Until(blocked.Add(outage)))
	if n := stored("uid-slow"); n != 0 || gate.Refused() == 0 {
		t.Fatalf("during the refusal: %d packets of the refused capture indexed, %d writes refused", n, gate.Refused())
	}
	gate.Block("")
	waitDrained(t, e, 60*time.Second)
	w.Wait(t, schemas.SourcePcapSink, func(st *schemas.Status) error {
		if st.LastError != "" || st.Packets != packets {
			return fmt.Errorf("lastError %q, %d packets; want none and %d", st.LastError, st.Packets, packets)
		}
		return nil
	})
	s.Stop()
	keys, paths := e.download(t)
	var slowPaths, fastPaths []string
	for i, k := range keys {
		if strings.Contains(k, "/slow/") {
			slowPaths = append(slowPaths, paths[i])
		} else {
			fastPaths = append(fastPaths, paths[i])
		}
	}
	sinktest.SamePackets(t, in, slowPaths, "of the capture refused for a while")
	sinktest.SamePackets(t, in, fastPaths, "of the other capture")
	if got := s.Metric("capstream_sink_pcap_batches_total", map[string]string{"result": "terminated"}); got != 0 {
		t.Errorf("%v batches terminated: a transient refusal must lose nothing", got)
	}
}
