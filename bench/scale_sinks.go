package main

// The sinks' part of -scale: the same packets (the bench workload,
// -scale-packets of them) spread over N interfaces, for each N of
// -scale-sizes, through both real sinks and, at the same size, through
// the JetStream floor's plain consumers.
//
// Each packet goes to an interface by its flow (a symmetric hash of its
// addresses and ports, so a flow stays on one interface, as a pod's flows
// do), interface i of N belongs to (capture, node) pair i mod 32 (4
// captures on 8 nodes), so the batches spread over the stream's
// partitions, and each interface's records are cut into batches as the
// producer cuts them, its last one marked Last. Per size and side, on a
// fresh embedded server with the packets stream and both sinks' durables:
// the two consumer processes start (`capstream sink pcap` and `sink
// flows` with default settings, or two floor consumers) and are ready;
// then the batches are published asynchronously within the producer's
// in-flight bound, and the clock runs from the first publish until both
// sinks' consumers have nothing pending or unacked (a sink acks only what
// it stored). CPU is each process's utime+stime from /proc over that
// time; this process's (the embedded server, the publisher, the polling)
// and the S3 and ClickHouse servers' are shown beside it. capstream's CPU
// above the floor is (sink processes' CPU - floor processes' CPU) per
// packet: what the sinks do beyond pulling and acking.

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/minio/minio-go/v7"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/producer"
	"github.com/capstream/capstream/schemas"
	"github.com/capstream/capstream/sink"
	"github.com/capstream/capstream/sink/pcapstore"
	"github.com/capstream/capstream/sink/sinktest"
)

const (
	// sinkScaleCaptures and sinkScaleNodes make the (capture, node)
	// pairs an interface belongs to.
	// Node names vary in a digit 0-7: the stream's partition is FNV-1a
	// of (namespace, capture, node) modulo the partitions (7 by
	// default; modulo a power of two only the low bits of each byte
	// count, see schemas.DefaultPacketPartitions).
	sinkScaleCaptures, sinkScaleNodes = 4, 8
	// sinkScaleProducer names the batches' producer.
	sinkScaleProducer = "bench-scale"
)

// scaleSide is one side of a size: both sinks, or the floor consumers.
type scaleSide struct {
	// Publish runs from the first publish to the last ack of JetStream;
	// Wall from the first publish until both sinks' consumers drained.
	Publish, Wall time.Duration
	// CPU is each process's CPU over Wall: the pcap sink's (or the floor
	// consumer of its durable) then the flow sink's.
	CPU [2]time.Duration
	// Harness is this process's CPU over Wall (the embedded server, the
	// publisher, the polling); Servers the S3 and ClickHouse servers'.
	Harness time.Duration
	Servers map[string]time.Duration
	// Exits are how the processes ended on SIGTERM ("" for clean).
	Exits [2]string
}

func (s scaleSide) cpu() time.Duration { return s.CPU[0] + s.CPU[1] }

// sinkScaleRun is one size of the sinks' part.
type sinkScaleRun struct {
	// Size is N; Interfaces how many of them got packets; Pairs the
	// (capture, node) pairs; Partitions how many of the stream's
	// PartitionsOf partitions got batches.
	Size, Interfaces, Pairs, Partitions, PartitionsOf int
	// Packets, Batches and Bytes (batch bodies) are what was published,
	// the same on both sides.
	Packets, Batches int
	Bytes            int64
	Sinks, Floor     scaleSide
	// storedCounts sums ClickHouse over the size's captures; S3Objects,
	// S3Bytes and PUTs what a listing of their prefixes shows, a PUT
	// being one request per object under the pcap sink's partSize (64
	// MiB) and one per part above it (minio-go's rule; the multipart
	// initiate and complete requests are POSTs).
	storedCounts
	S3Objects, PUTs int
	S3Bytes         uint64
}

// perPacket is d per packet of the run, in microseconds.
func (r *sinkScaleRun) perPacket(d time.Duration) float64 {
	return float64(d.Nanoseconds()) / 1e3 / float64(max(r.Packets, 1))
}

// above is capstream's CPU above the floor per packet, in microseconds.
func (r *sinkScaleRun) above() float64 { return r.perPacket(r.Sinks.cpu() - r.Floor.cpu()) }

// check returns every way the run disagrees with what was published.
func (r *sinkScaleRun) check() []string {
	var probs []string
	if r.ObjectPackets != uint64(r.Packets) || r.FlowPackets != uint64(r.Packets) {
		probs = append(probs, fmt.Sprintf("sinks at %d interfaces: %d packets in pcap_objects, %d in flows, want %d", r.Size, r.ObjectPackets, r.FlowPackets, r.Packets))
	}
	if r.S3Objects != r.Objects || r.S3Bytes != r.ObjectBytes {
		probs = append(probs, fmt.Sprintf("sinks at %d interfaces: S3 holds %d objects of %d bytes, pcap_objects %d of %d", r.Size, r.S3Objects, r.S3Bytes, r.Objects, r.ObjectBytes))
	}
	for _, side := range []scaleSide{r.Sinks, r.Floor} {
		for _, e := range side.Exits {
			if e != "" {
				probs = append(probs, fmt.Sprintf("sinks at %d interfaces: a process did not exit cleanly on SIGTERM: %s", r.Size, e))
			}
		}
	}
	return probs
}

// sinkScaleEnv is what every size shares.
type sinkScaleEnv struct {
	o    options
	dir  string
	bin  string
	st   storage
	w    workload
	pids map[string]int
	// flows is each record's flow hash, in file order.
	flows []uint64
}

// flowHashes returns a hash of each record's flow, the same both ways.
func flowHashes(path string) ([]uint64, error) {
	var hs []uint64
	err := eachRecord(path, func(uint32) {}, func(_ int, _ gopacket.CaptureInfo, data []byte) error {
		p := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.DecodeOptions{Lazy: true, NoCopy: true})
		var h uint64
		if nl := p.NetworkLayer(); nl != nil {
			h = nl.NetworkFlow().FastHash() // symmetric
		}
		if tl := p.TransportLayer(); tl != nil {
			h = h*31 + tl.TransportFlow().FastHash()
		}
		hs = append(hs, h)
		return nil
	})
	return hs, err
}

// sinkScaleCapture and sinkScaleNode name pair's capture at size n and
// its node: the first pairs differ by node, so a few interfaces already
// reach every partition.
func sinkScaleCapture(n, pair int) string {
	return fmt.Sprintf("scale-n%d-c%d", n, pair/sinkScaleNodes%sinkScaleCaptures)
}
func sinkScaleNode(pair int) string { return fmt.Sprintf("scale-node-%d", pair%sinkScaleNodes) }

// sinkScalePairs is the number of (capture, node) pairs at n interfaces.
func sinkScalePairs(n int) int { return min(n, sinkScaleCaptures*sinkScaleNodes) }

// eachBatch cuts the workload into the batches of n interfaces and calls
// fn with each; it returns how many interfaces got packets.
func (e *sinkScaleEnv) eachBatch(n int, fn func(h schemas.BatchHeader, body []byte) error) (int, error) {
	bs := make([]*batcher, n)
	for i := range bs {
		pair := i % sinkScalePairs(n)
		capture := sinkScaleCapture(n, pair)
		h := sinktest.Header(benchNamespace, capture, "uid-"+capture, sinkScaleNode(pair), fmt.Sprintf("pod-%04d", i), fmt.Sprintf("cali%04d", i))
		h.Producer = fmt.Sprintf("%s-%d", sinkScaleProducer, n)
		bs[i] = &batcher{h: h, fn: fn}
	}
	err := eachRecord(e.w.Path, func(lt uint32) {
		for _, b := range bs {
			b.h.LinkType = lt
		}
	}, func(i int, ci gopacket.CaptureInfo, data []byte) error {
		return bs[e.flows[i]%uint64(n)].add(ci, data)
	})
	used := 0
	for _, b := range bs {
		if err == nil && b.h.Packets > 0 {
			used++
			err = b.send(true)
		}
	}
	return used, err
}

// runSinkScale runs every size of o.ScaleSizes.
func runSinkScale(ctx context.Context, o options, dir, bin string) ([]*sinkScaleRun, error) {
	st, cleanup, err := openStorage(ctx, o)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	e := &sinkScaleEnv{o: o, dir: dir, bin: bin, st: st, pids: serverPids(testenv.EnvFilePath())}
	start := time.Now().Add(-time.Minute).Truncate(time.Second)
	if e.w, err = genWorkload(filepath.Join(dir, "scale-workload.pcap"), o.ScalePackets, start); err != nil {
		return nil, err
	}
	if e.flows, err = flowHashes(e.w.Path); err != nil {
		return nil, err
	}
	var runs []*sinkScaleRun
	for _, n := range o.ScaleSizes {
		r := &sinkScaleRun{Size: n, Pairs: sinkScalePairs(n)}
		for _, floor := range []bool{false, true} {
			fmt.Fprintf(o.Log, "bench: scale: %d interfaces, %s\n", n, map[bool]string{false: "both sinks", true: "JetStream floor"}[floor])
			if err := e.side(ctx, r, floor); err != nil {
				return runs, fmt.Errorf("%d interfaces: %w", n, err)
			}
		}
		runs = append(runs, r)
	}
	return runs, nil
}

// side runs one side of r's size on a fresh server.
func (e *sinkScaleEnv) side(ctx context.Context, r *sinkScaleRun, floor bool) error {
	pc := producer.DefaultConfig()
	inFlight := jetstream.WithPublishAsyncMaxPending(min(pc.MaxInFlightBatches, pc.MaxInFlightBytes/pc.BatchBytes))
	bus, err := startPhaseBus(e.dir, fmt.Sprintf("scale-%d", r.Size), inFlight)
	if err != nil {
		return err
	}
	defer bus.close()
	limits := schemas.DefaultPacketsStreamLimits()
	limits.MaxBytes = max(limits.MaxBytes, 2*e.w.FileBytes)
	if err := schemas.EnsureStreams(ctx, bus.js, limits); err != nil {
		return err
	}
	// The durables exist before the first batch (interest retention).
	for _, cc := range []jetstream.ConsumerConfig{schemas.PcapSinkConsumer(), schemas.FlowSinkConsumer()} {
		if _, err := sink.Bind(ctx, bus.js, cc, 0); err != nil {
			return err
		}
	}
	s := &r.Sinks
	if floor {
		s = &r.Floor
	}
	var procs []*proc
	defer func() {
		for i, p := range procs {
			s.Exits[i] = p.stop()
		}
	}()
	mem := memEnv{o: e.o, dir: e.dir, bin: e.bin, natsURL: bus.URL, st: e.st}
	for _, name := range []string{"pcap", "flows"} {
		var p *proc
		if floor {
			p, err = startFloorChild(ctx, e.o, e.dir, bus.URL, map[string]string{"pcap": schemas.ConsumerPcapSink, "flows": schemas.ConsumerFlowSink}[name])
		} else {
			var c *child
			c, err = mem.startSink(ctx, name, &sinkMemory{Sink: name})
			if c != nil {
				p = c.proc
			}
		}
		if err != nil {
			return err
		}
		procs = append(procs, p)
	}
	for _, p := range procs {
		if err := p.waitReady(ctx, e.o.Timeout); err != nil {
			return err
		}
	}

	cpu0 := [2]time.Duration{procCPU(procs[0].pid()), procCPU(procs[1].pid())}
	c0 := sampleCPU(e.pids)
	t0 := time.Now()
	var counts memoryRun
	pub := &publisher{js: bus.js, r: &counts}
	if r.Interfaces, err = e.eachBatch(r.Size, pub.publish); err != nil {
		return err
	}
	if err := pub.wait(ctx, e.o.Timeout); err != nil {
		return err
	}
	s.Publish = time.Since(t0)
	// Every 100ms: each look asks for the state of every partition
	// consumer of both sinks, work for the server while it is measured.
	exited := make(chan struct{})
	go func() {
		select {
		case <-procs[0].done:
		case <-procs[1].done:
		}
		close(exited)
	}()
	err = poll(ctx, e.o.Timeout, 100*time.Millisecond, exited, func(last error) error {
		for _, p := range procs {
			if p.exited() {
				return fmt.Errorf("%s exited: %v (waiting for: %w)", p.name, p.err, last)
			}
		}
		return last
	}, func() error {
		for _, name := range []string{schemas.ConsumerPcapSink, schemas.ConsumerFlowSink} {
			if err := sink.Drained(ctx, bus.js, name, false); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.Wall = time.Since(t0)
	for i, p := range procs {
		s.CPU[i] = procCPU(p.pid()) - cpu0[i]
	}
	s.Harness, s.Servers = sampleCPU(e.pids).since(c0)
	if r.Batches != 0 && (r.Batches != counts.Batches || r.Packets != counts.Packets) {
		return fmt.Errorf("published %d batches of %d packets, the other side %d of %d", counts.Batches, counts.Packets, r.Batches, r.Packets)
	}
	r.Packets, r.Batches, r.Bytes = counts.Packets, counts.Batches, counts.Bytes
	if r.Partitions, r.PartitionsOf, err = partitionsUsed(ctx, bus.js); err != nil {
		return err
	}
	if floor {
		return nil
	}
	return e.stored(ctx, r)
}

// partitionsUsed returns how many partitions of the packets stream hold
// batches, and how many it has.
func partitionsUsed(ctx context.Context, js jetstream.JetStream) (used, of int, err error) {
	st, err := js.Stream(ctx, schemas.StreamPackets)
	if err != nil {
		return 0, 0, err
	}
	if of, err = schemas.PacketPartitions(st.CachedInfo().Config); err != nil {
		return 0, 0, err
	}
	for p := range of {
		c, err := st.Consumer(ctx, schemas.SinkPartitionName(schemas.ConsumerPcapSink, p))
		if err != nil {
			return 0, 0, err
		}
		info, err := c.Info(ctx)
		if err != nil {
			return 0, 0, err
		}
		if info.Delivered.Stream > 0 {
			used++
		}
	}
	return used, of, nil
}

// stored reads what ClickHouse and S3 hold for the size's captures. The
// sinks acked everything, so all of it is stored; a short count is a
// loss, which check reports, after a few seconds' grace for ClickHouse's
// FINAL.
func (e *sinkScaleEnv) stored(ctx context.Context, r *sinkScaleRun) error {
	ch, err := e.st.ch.Open()
	if err != nil {
		return err
	}
	defer ch.Close()
	err = poll(ctx, 5*time.Second, 100*time.Millisecond, nil, nil, func() error {
		r.storedCounts = storedCounts{}
		for c := range sinkScaleCaptures {
			c, err := queryStored(ctx, ch, sinkScaleCapture(r.Size, c*sinkScaleNodes))
			if err != nil {
				return err
			}
			r.Objects, r.ObjectBytes, r.ObjectPackets = r.Objects+c.Objects, r.ObjectBytes+c.ObjectBytes, r.ObjectPackets+c.ObjectPackets
			r.FlowRecords, r.FlowPackets = r.FlowRecords+c.FlowRecords, r.FlowPackets+c.FlowPackets
		}
		if r.ObjectPackets != uint64(r.Packets) || r.FlowPackets != uint64(r.Packets) {
			return errors.New("short")
		}
		return nil
	})
	if err != nil && ctx.Err() != nil {
		return err
	}
	part := int64(pcapstore.DefaultConfig().PartSize)
	r.S3Objects, r.S3Bytes, r.PUTs = 0, 0, 0
	for c := range sinkScaleCaptures {
		prefix := fmt.Sprintf("%s/%s/%s/", pcapPrefix, benchNamespace, sinkScaleCapture(r.Size, c*sinkScaleNodes))
		for obj := range e.st.s3Client.ListObjects(ctx, e.st.s3.Bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
			if obj.Err != nil {
				return fmt.Errorf("list s3://%s/%s: %w", e.st.s3.Bucket, prefix, obj.Err)
			}
			r.S3Objects++
			r.S3Bytes += uint64(obj.Size)
			r.PUTs += putRequests(obj.Size, part)
		}
	}
	return nil
}

// putRequests is how many PUTs minio-go sends for an object of size with
// partSize part: one below it, one per part from there.
func putRequests(size, part int64) int {
	if size < part {
		return 1
	}
	return int((size + part - 1) / part)
}
