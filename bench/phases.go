package main

import (
	"context"
	"fmt"
	"os"
	"runtime/pprof"
	"slices"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/minio/minio-go/v7"
)

// throughputResult is what the throughput phase measured.
type throughputResult struct {
	// Wall runs from the capture command's publish until both sinks have
	// acked every batch, i.e. every packet is in a completed, indexed S3
	// object and in an inserted flow row.
	Wall time.Duration
	// Replay runs from the same start until JetStream acked the
	// producer's last batch.
	Replay time.Duration
	// CPUSelf is this process's CPU over Wall: producer, JetStream, both
	// sinks (and the harness's polling).
	CPUSelf time.Duration
	// CPUServers is each out-of-process server's CPU over Wall.
	CPUServers map[string]time.Duration
	// Batches is how many batches the producer published.
	Batches int
	// Drops is the producer's publish drops, in packets; anything but 0
	// is a failure.
	Drops int
	// storedCounts is what ClickHouse holds for the capture.
	storedCounts
	// S3Objects and S3Bytes are what a listing of the capture's prefix
	// shows.
	S3Objects int
	S3Bytes   uint64
}

// runThroughput replays the workload as fast as possible and waits until
// everything is stored.
func runThroughput(ctx context.Context, p *pipeline, o options, w workload, pids map[string]int, st storage) (throughputResult, error) {
	var r throughputResult
	if o.CPUProfile != "" {
		f, err := os.Create(o.CPUProfile)
		if err != nil {
			return r, fmt.Errorf("cpu profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return r, fmt.Errorf("cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	c0 := sampleCPU(pids)
	t0 := time.Now()
	if err := p.capture(ctx, throughputName, throughputIf); err != nil {
		return r, err
	}
	select {
	case <-p.finishedChan(throughputName):
	case <-ctx.Done():
		return r, ctx.Err()
	case <-p.gctx.Done():
		return r, fmt.Errorf("a component failed: %w", p.g.Wait())
	case <-time.After(o.Timeout):
		return r, fmt.Errorf("replay of %d packets not finished after %s", w.Packets, o.Timeout)
	}
	if err := p.until(ctx, o.Timeout, func() error {
		pub, acked := p.counter("capstream_producer_batches_published_total"), p.counter("capstream_producer_batches_acked_total")
		if d := p.counter("capstream_producer_publish_drops_total"); d > 0 {
			return nil // reported below; waiting would not bring them back
		}
		if acked < pub {
			return fmt.Errorf("%v of %v batches acked", acked, pub)
		}
		return nil
	}); err != nil {
		return r, err
	}
	r.Replay = time.Since(t0)
	if err := p.until(ctx, o.Timeout, func() error { return p.drained(ctx) }); err != nil {
		return r, err
	}
	r.Wall = time.Since(t0)
	r.CPUSelf, r.CPUServers = sampleCPU(pids).since(c0)
	r.Batches = int(p.counter("capstream_producer_batches_published_total"))
	r.Drops = int(p.counter("capstream_producer_publish_drops_total"))

	var err error
	if r.storedCounts, err = queryStored(ctx, p.ch, throughputName); err != nil {
		return r, err
	}
	prefix := fmt.Sprintf("%s/%s/%s/", pcapPrefix, benchNamespace, throughputName)
	for obj := range st.s3Client.ListObjects(ctx, st.s3.Bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if obj.Err != nil {
			return r, fmt.Errorf("list s3://%s/%s: %w", st.s3.Bucket, prefix, obj.Err)
		}
		r.S3Objects++
		r.S3Bytes += uint64(obj.Size)
	}
	return r, nil
}

// check returns every way the stored data disagrees with the workload.
func (r throughputResult) check(w workload) []string {
	var probs []string
	if r.Drops > 0 {
		probs = append(probs, fmt.Sprintf("producer dropped %d packets", r.Drops))
	}
	if r.ObjectPackets != uint64(w.Packets) {
		probs = append(probs, fmt.Sprintf("pcap_objects hold %d packets, the workload %d", r.ObjectPackets, w.Packets))
	}
	if r.FlowPackets != uint64(w.Packets) {
		probs = append(probs, fmt.Sprintf("flows count %d packets, the workload %d", r.FlowPackets, w.Packets))
	}
	if r.S3Objects != r.Objects || r.S3Bytes != r.ObjectBytes {
		probs = append(probs, fmt.Sprintf("S3 holds %d objects of %d bytes, pcap_objects %d of %d", r.S3Objects, r.S3Bytes, r.Objects, r.ObjectBytes))
	}
	// Each object is one pcap header plus the batch bodies, which are the
	// file's records unchanged: bytes must add up exactly.
	if want := uint64(w.FileBytes-24) + 24*uint64(r.Objects); r.ObjectBytes != want {
		probs = append(probs, fmt.Sprintf("objects hold %d bytes, want %d (the workload's records plus a header per object)", r.ObjectBytes, want))
	}
	return probs
}

// latencyResult is what the latency phase measured.
type latencyResult struct {
	// Budget is the target: the flow sink's active timeout plus 2 s.
	Budget time.Duration
	// Latencies are, per marker seen, the time from the producer reading
	// it to its flow row being queryable, sorted.
	Latencies []time.Duration
	// Missing is how many markers never showed up.
	Missing int
}

// runLatency replays the latency capture at its recorded pace, with the
// pipeline otherwise idle, and times each marker from the producer's read
// to the flow row's first appearance in a query.
func runLatency(ctx context.Context, p *pipeline, o options, lw latencyWorkload) (latencyResult, error) {
	r := latencyResult{Budget: o.ActiveTimeout + 2*time.Second}
	if err := p.capture(ctx, latencyName, latencyIf); err != nil {
		return r, err
	}
	q := fmt.Sprintf("SELECT orig_port FROM flows WHERE namespace = '%s' AND capture = '%s' AND resp_port = %d", benchNamespace, latencyName, latencyPort)
	seen := map[uint16]time.Time{}
	// Long enough for the last marker to be released by stopAfter and
	// well past the budget, so a miss is a miss and not a slow start.
	wait := lw.Duration + r.Budget + 10*time.Second
	err := p.until(ctx, wait, func() error {
		rows, err := p.ch.Query(ctx, q)
		if err != nil {
			return err
		}
		defer rows.Close()
		now := time.Now()
		for rows.Next() {
			var port uint16
			if err := rows.Scan(&port); err != nil {
				return err
			}
			if _, ok := seen[port]; !ok {
				seen[port] = now
			}
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if len(seen) < len(lw.Markers) {
			return fmt.Errorf("%d of %d markers queryable", len(seen), len(lw.Markers))
		}
		return nil
	})
	if err != nil && ctx.Err() != nil {
		return r, err
	}
	for _, port := range lw.Markers {
		read, ok := p.marks.readAt(port)
		at, found := seen[port]
		if !ok || !found {
			r.Missing++
			continue
		}
		r.Latencies = append(r.Latencies, at.Sub(read))
	}
	slices.Sort(r.Latencies)
	return r, nil
}

// quantile returns the q-quantile (nearest rank) of sorted ds, or 0.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	i := int(q*float64(len(ds)) + 0.5)
	return ds[min(max(i-1, 0), len(ds)-1)]
}

// storedCounts is what ClickHouse holds for one capture: pcap_objects'
// count and sums, the flows table's row count and packet sum.
type storedCounts struct {
	Objects       int
	ObjectBytes   uint64
	ObjectPackets uint64
	FlowRecords   int
	FlowPackets   uint64
}

// queryStored reads the storedCounts of capture.
func queryStored(ctx context.Context, ch driver.Conn, capture string) (storedCounts, error) {
	var c storedCounts
	q := fmt.Sprintf("SELECT count(), sum(size), sum(packets) FROM pcap_objects FINAL WHERE namespace = '%s' AND capture = '%s'", benchNamespace, capture)
	var objects uint64
	if err := ch.QueryRow(ctx, q).Scan(&objects, &c.ObjectBytes, &c.ObjectPackets); err != nil {
		return c, fmt.Errorf("query pcap_objects: %w", err)
	}
	c.Objects = int(objects)
	q = fmt.Sprintf("SELECT count(), sum(orig_packets + resp_packets) FROM flows FINAL WHERE namespace = '%s' AND capture = '%s'", benchNamespace, capture)
	var records uint64
	if err := ch.QueryRow(ctx, q).Scan(&records, &c.FlowPackets); err != nil {
		return c, fmt.Errorf("query flows: %w", err)
	}
	c.FlowRecords = int(records)
	return c, nil
}
