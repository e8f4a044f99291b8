// Command bench is capstream's end-to-end benchmark harness. It generates a
// realistic workload (many interleaved flows, mixed packet sizes, HTTP, TLS
// with SNI, DNS and other UDP, a fifth of it IPv6), replays it as fast as
// possible through the producer's file source, an embedded JetStream server
// and both sinks into the S3 server and ClickHouse that deploy/dev/deps.sh
// runs, and measures packets/s, bytes/s, CPU per packet and, in a second,
// paced phase, the latency from a packet being read to its flow row being
// queryable, then the JetStream floor (the broker alone carrying the same
// batches to two acking consumers, no capstream code: what the pipeline
// cannot go below), and, in a last phase, each sink's peak RSS as a process of its own
// (the `capstream` binary, built once), on the same workload and on a
// hostile one (thousands of interfaces, more flows than the flow table
// holds). In the same run it measures the references on the same pcap:
// `tcpdump -r in -w out` (the copy limit), `argus -r in -w out` and tshark's
// conversation tables (flow extraction). It prints one table,
// `scenario | baseline | candidate | ratio`, then the absolute figures and
// the targets, and writes them under -out.
//
// Everything runs in this process except ClickHouse and the S3 server, and
// the sinks of the memory phase; the servers' CPU is sampled from /proc
// with the pids deps.sh records. The harness
// creates a private ClickHouse database and S3 bucket and removes them at
// the end.
//
// Usage: go run ./bench [-packets N] [-min-ratio R] [-out DIR] ...
// It exits 1 when the run fails or the stored data disagrees with the
// workload, and 2 when the pipeline/copy bytes/s ratio is below -min-ratio.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/capstream/capstream/internal/testenv"
	chschema "github.com/capstream/capstream/schemas/clickhouse"
)

// options are the harness's settings, from flags.
type options struct {
	// Packets is the size of the throughput workload.
	Packets int
	// MinRatio: below it, the pipeline/copy bytes/s ratio fails the run.
	MinRatio float64
	// Out is where results are written; empty writes none.
	Out string
	// ActiveTimeout is the flow sink's active timeout; the latency target
	// is this plus 2 s.
	ActiveTimeout time.Duration
	// Markers is how many marker packets the latency phase times.
	Markers int
	// Reps is how many times each fast reference tool runs (the median is
	// kept).
	Reps int
	// Tshark adds tshark's conversation tables as a flow reference.
	Tshark bool
	// Timeout bounds each wait of the throughput phase.
	Timeout time.Duration
	// Database and Bucket, when set, are used as they are and neither
	// created nor removed (the test passes testenv's); otherwise the
	// harness makes private ones.
	Database, Bucket string
	// Floor measures the JetStream floor: the broker alone carrying the
	// workload's batches to two acking consumers, no capstream code.
	Floor bool
	// Memory runs the memory phase: each sink as its own process, its
	// peak RSS measured on the throughput workload and on a hostile input.
	Memory bool
	// MemoryStopAfter, when set, overrides both sinks' stopAfter in the
	// memory phase (tests, to end the hostile input sooner); 0 measures
	// the defaults.
	MemoryStopAfter time.Duration
	// ProducerScale runs the producer scale phase: one producer process,
	// ScaleInterfaces interfaces, ScaleCaptures captures selecting all of
	// them, rings of ScaleRingBytes in a budget of ScaleMaxRingBytes; its
	// idle CPU is measured over ScaleIdle.
	// ScalePacketsPerIface is the UDP packets sent on each interface.
	ScaleIdle                                            time.Duration
	ProducerScale                                        bool
	ScaleInterfaces, ScaleCaptures, ScalePacketsPerIface int
	ScaleRingBytes, ScaleMaxRingBytes                    int64
	// Scale runs -scale (scale.go) and nothing else: the router scale
	// phase, the producer scale phase and the sinks at each of
	// ScaleSizes interfaces, ScalePackets packets each, beside the
	// JetStream floor at the same size.
	Scale        bool
	ScaleSizes   []int
	ScalePackets int
	// CPUProfile, when set, is where a pprof CPU profile of the
	// throughput phase is written, to see where the pipeline's CPU goes.
	CPUProfile string
	// Churn runs the churn phase (churn.go): ChurnCycles captures
	// created and deleted, ChurnConcurrency at a time, against a router
	// and a producer process; ChurnOnly runs it and nothing else.
	Churn, ChurnOnly              bool
	ChurnCycles, ChurnConcurrency int
	// RouterScale runs the router scale phase (router_scale.go) and
	// nothing else: RouterScalePods pods on RouterScaleNodes nodes and
	// RouterScaleCaptures captures, RouterScaleChanges label changes
	// timed, RouterScaleConcurrency API calls at a time while loading.
	RouterScale                                            bool
	RouterScaleNodes, RouterScalePods, RouterScaleCaptures int
	RouterScaleChanges, RouterScaleConcurrency             int
	// Log receives the components' warnings.
	Log io.Writer
}

func defaultOptions() options {
	return options{
		Packets:       1000000,
		Out:           "bench/results",
		ActiveTimeout: 5 * time.Second,
		Markers:       10,
		Reps:          3,
		Tshark:        true,
		Memory:        true,
		Floor:         true,
		Timeout:       5 * time.Minute,
		Log:           os.Stderr,

		ScaleInterfaces:   scaleDefaults.ifaces,
		ScaleCaptures:     scaleDefaults.captures,
		ScaleRingBytes:    scaleDefaults.ring,
		ScaleMaxRingBytes: scaleDefaults.budget,
		ScaleIdle:         scaleDefaults.idle,
		ScalePackets:      1000000,
		ScaleSizes:        []int{1, 10, 100, 1000},

		ScalePacketsPerIface: scaleDefaults.packets,

		ChurnCycles:      10000,
		ChurnConcurrency: 16,

		RouterScaleNodes:       routerScaleDefaults.nodes,
		RouterScalePods:        routerScaleDefaults.pods,
		RouterScaleCaptures:    routerScaleDefaults.captures,
		RouterScaleChanges:     routerScaleDefaults.changes,
		RouterScaleConcurrency: routerScaleDefaults.concurrency,
	}
}

// errRatio is returned when the run worked but the pipeline/copy ratio is
// below -min-ratio.
var errRatio = errors.New("pipeline/copy ratio below -min-ratio")

// errSkipped marks a reference tool left out on purpose.
var errSkipped = errors.New("skipped")

func main() {
	if len(os.Args) > 1 && os.Args[1] == floorChildArg {
		os.Exit(runFloorChild(os.Args[2:]))
	}
	o := defaultOptions()
	flag.IntVar(&o.Packets, "packets", o.Packets, "packets in the generated throughput workload")
	flag.Float64Var(&o.MinRatio, "min-ratio", 0, "exit 2 if pipeline bytes/s over tcpdump copy bytes/s is below this (0: report only)")
	flag.StringVar(&o.Out, "out", o.Out, "directory for result files (empty: none)")
	flag.DurationVar(&o.ActiveTimeout, "active-timeout", o.ActiveTimeout, "flow sink active timeout; the latency target is this plus 2s")
	flag.IntVar(&o.Markers, "markers", o.Markers, "marker packets timed in the latency phase")
	flag.IntVar(&o.Reps, "reps", o.Reps, "runs of tcpdump and argus (the median is kept)")
	flag.BoolVar(&o.Tshark, "tshark", o.Tshark, "also time tshark's conversation tables (slow)")
	flag.DurationVar(&o.Timeout, "timeout", o.Timeout, "bound on each wait of the throughput phase")
	flag.BoolVar(&o.Memory, "memory", o.Memory, "run the memory phase: each sink's peak RSS as a separate process")
	flag.BoolVar(&o.Floor, "floor", o.Floor, "measure the JetStream floor: the broker alone carrying the same batches to two acking consumers")
	flag.StringVar(&o.CPUProfile, "cpuprofile", "", "write a CPU profile of the throughput phase to this file")
	flag.BoolVar(&o.ProducerScale, "producer-scale", false, "run the producer scale phase: one producer process, many interfaces, many captures selecting all of them (needs root)")
	flag.IntVar(&o.ScaleInterfaces, "producer-scale-ifaces", o.ScaleInterfaces, "interfaces of the producer scale phase")
	flag.IntVar(&o.ScaleCaptures, "producer-scale-captures", o.ScaleCaptures, "captures of the producer scale phase, each selecting every interface")
	flag.Int64Var(&o.ScaleRingBytes, "producer-scale-ring", o.ScaleRingBytes, "afpacket.ringBytes of the producer scale phase (a multiple of 64 KiB; blocks are 1 MiB or the ring if smaller)")
	flag.Int64Var(&o.ScaleMaxRingBytes, "producer-scale-budget", o.ScaleMaxRingBytes, "maxRingBytes of the producer scale phase")
	flag.IntVar(&o.ScalePacketsPerIface, "producer-scale-packets", o.ScalePacketsPerIface, "UDP packets sent on each interface in the producer scale phase")
	flag.BoolVar(&o.Scale, "scale", false, "run the scale runs and nothing else: router scale, producer scale at 110 pods, the sinks and the JetStream floor at -scale-sizes interfaces (needs root)")
	flag.Var(sizesFlag{&o.ScaleSizes}, "scale-sizes", "interface counts of the sinks' scale runs, comma-separated")
	flag.IntVar(&o.ScalePackets, "scale-packets", o.ScalePackets, "packets of each of the sinks' scale runs")
	flag.BoolVar(&o.Churn, "churn", false, "run the churn phase: captures created and deleted against a router and a producer process, the commands stream and their memory back at the start")
	flag.BoolVar(&o.ChurnOnly, "churn-only", false, "run the churn phase and nothing else")
	flag.IntVar(&o.ChurnCycles, "churn-cycles", o.ChurnCycles, "create/delete cycles of the churn phase")
	flag.IntVar(&o.ChurnConcurrency, "churn-concurrency", o.ChurnConcurrency, "cycles of the churn phase in flight at once")
	flag.BoolVar(&o.RouterScale, "router-scale", false, "run the router scale phase and nothing else: the router process against many pods and captures in the real kube-apiserver")
	flag.IntVar(&o.RouterScaleNodes, "router-scale-nodes", o.RouterScaleNodes, "nodes the router scale phase spreads its pods over")
	flag.IntVar(&o.RouterScalePods, "router-scale-pods", o.RouterScalePods, "pods of the router scale phase")
	flag.IntVar(&o.RouterScaleCaptures, "router-scale-captures", o.RouterScaleCaptures, "PacketCaptures of the router scale phase")
	flag.IntVar(&o.RouterScaleChanges, "router-scale-changes", o.RouterScaleChanges, "pod label changes timed, one at a time, in the router scale phase")
	flag.IntVar(&o.RouterScaleConcurrency, "router-scale-concurrency", o.RouterScaleConcurrency, "API calls in flight while the router scale phase creates and deletes objects")
	flag.Parse()
	if o.Scale {
		scaleFlagDefaults(&o)
	}
	if o.RouterScaleNodes < 1 || o.RouterScalePods < 1 || o.RouterScaleCaptures < 1 || o.RouterScaleChanges < 0 || o.RouterScaleConcurrency < 1 {
		fmt.Fprintln(os.Stderr, "bench: want -router-scale-nodes, -pods, -captures, -concurrency >= 1 and -changes >= 0")
		os.Exit(2)
	}
	if o.ChurnCycles < 1 || o.ChurnConcurrency < 1 {
		fmt.Fprintln(os.Stderr, "bench: want -churn-cycles and -churn-concurrency >= 1")
		os.Exit(2)
	}
	if flag.NArg() > 0 || o.Packets < 1 || o.Markers < 1 || o.Reps < 1 || o.ActiveTimeout < time.Second ||
		o.ScaleInterfaces < 1 || o.ScaleCaptures < 1 || o.ScaleRingBytes < 64<<10 || o.ScaleMaxRingBytes < o.ScaleRingBytes ||
		o.ScalePacketsPerIface < 1 || o.ScalePackets < 1 || len(o.ScaleSizes) == 0 {
		fmt.Fprintln(os.Stderr, "bench: want -packets, -markers, -reps >= 1, -active-timeout >= 1s and no arguments")
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	_, err := run(ctx, o, os.Stdout)
	switch {
	case errors.Is(err, errRatio):
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	case err != nil:
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// result is one whole run.
type result struct {
	Machine    machine
	Options    options
	Workload   workload
	Copy       toolRun
	Argus      toolRun
	Tshark     toolRun
	Throughput throughputResult
	Latency    latencyResult
	Memory     memoryResult
	Floor      floorResult // file storage, as capstream runs
	FloorMem   floorResult // the same in memory
	// ProducerScale is the producer scale phase (-producer-scale).
	ProducerScale *scaleResult
	// Churn is the churn phase (-churn).
	Churn *churnResult
	// ServerPids are the out-of-process servers whose CPU was sampled.
	ServerPids map[string]int
	// Problems are disagreements between the stored data and the
	// workload; any fails the run.
	Problems []string
}

// run does the whole benchmark and prints the report to stdout.
func run(ctx context.Context, o options, stdout io.Writer) (*result, error) {
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.ChurnOnly {
		return runChurnOnly(ctx, o, stdout)
	}
	if o.RouterScale {
		return runRouterScaleOnly(ctx, o, stdout)
	}
	if o.Scale {
		return runScaleOnly(ctx, o, stdout)
	}
	res := &result{Machine: readMachine(), Options: o}
	dir, err := os.MkdirTemp("", "capstream-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)

	fmt.Fprintf(o.Log, "bench: generating %d packets\n", o.Packets)
	start := time.Now().Add(-time.Minute).Truncate(time.Second)
	if res.Workload, err = genWorkload(filepath.Join(dir, "workload.pcap"), o.Packets, start); err != nil {
		return nil, err
	}
	// Two active-timeout windows and a bit, so markers land in every part
	// of a window and windows are released both by later packets and,
	// for the last, by stopAfter.
	lw, err := genLatency(filepath.Join(dir, "latency.pcap"), time.Now().Truncate(time.Second), 2*o.ActiveTimeout+time.Second, o.Markers)
	if err != nil {
		return nil, err
	}

	fmt.Fprintln(o.Log, "bench: timing the reference tools")
	res.Copy, res.Argus, res.Tshark = references(dir, res.Workload, o.Reps, o.Tshark)
	if res.Copy.Err != nil {
		return nil, fmt.Errorf("copy limit: %w", res.Copy.Err)
	}

	st, cleanup, err := openStorage(ctx, o)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	res.ServerPids = serverPids(testenv.EnvFilePath())

	fmt.Fprintln(o.Log, "bench: starting the pipeline")
	p, err := startPipeline(ctx, o, dir, st, res.Workload, lw)
	if err != nil {
		return nil, err
	}
	fmt.Fprintln(o.Log, "bench: throughput phase")
	res.Throughput, err = runThroughput(ctx, p, o, res.Workload, res.ServerPids, st)
	if err == nil {
		fmt.Fprintln(o.Log, "bench: latency phase")
		res.Latency, err = runLatency(ctx, p, o, lw)
	}
	if cerr := p.close(); err == nil && cerr != nil {
		err = fmt.Errorf("pipeline shutdown: %w", cerr)
	}
	if err != nil {
		return nil, err
	}
	res.Floor.Skipped, res.FloorMem.Skipped = !o.Floor, !o.Floor
	if o.Floor {
		fmt.Fprintln(o.Log, "bench: JetStream floor")
		if res.Floor, err = runFloor(ctx, dir, res.Workload, jetstream.FileStorage); err != nil {
			return nil, fmt.Errorf("jetstream floor: %w", err)
		}
		if res.FloorMem, err = runFloor(ctx, dir, res.Workload, jetstream.MemoryStorage); err != nil {
			return nil, fmt.Errorf("jetstream floor, memory storage: %w", err)
		}
	}
	res.Memory.Skipped = !o.Memory
	if o.Memory {
		fmt.Fprintln(o.Log, "bench: memory phase")
		if res.Memory, err = runMemory(ctx, o, dir, st, res.Workload); err != nil {
			return nil, fmt.Errorf("memory phase: %w", err)
		}
	}
	res.ProducerScale = &scaleResult{Skipped: true}
	if o.ProducerScale {
		fmt.Fprintln(o.Log, "bench: producer scale phase")
		if res.ProducerScale, err = runProducerScale(ctx, o, dir); err != nil {
			return nil, fmt.Errorf("producer scale phase: %w", err)
		}
	}
	res.Problems = res.Throughput.check(res.Workload)
	res.Problems = append(res.Problems, res.ProducerScale.Problems...)
	res.Churn = &churnResult{Skipped: true}
	if o.Churn {
		fmt.Fprintln(o.Log, "bench: churn phase")
		if res.Churn, err = runChurn(ctx, o, dir); err != nil {
			return nil, fmt.Errorf("churn phase: %w", err)
		}
		res.Problems = append(res.Problems, res.Churn.Problems...)
	}
	if res.Latency.Missing > 0 {
		res.Problems = append(res.Problems, fmt.Sprintf("%d of %d latency markers never became queryable", res.Latency.Missing, o.Markers))
	}
	res.Problems = append(res.Problems, res.Memory.check(res.Workload)...)

	report := res.report() + res.ProducerScale.report()
	report += res.Churn.report()
	fmt.Fprint(stdout, report)
	if err := writeReport(o, "", report); err != nil {
		return res, err
	}
	if len(res.Problems) > 0 {
		return res, fmt.Errorf("stored data disagrees with the workload: %v", res.Problems)
	}
	if o.MinRatio > 0 && res.copyRatio() < o.MinRatio {
		return res, fmt.Errorf("%w: %.3f < %.3f", errRatio, res.copyRatio(), o.MinRatio)
	}
	return res, nil
}

// cleanupTimeout bounds removing the database and bucket, on a context of
// its own so it runs after an interrupt too.
const cleanupTimeout = time.Minute

// openStorage points the sinks at the services in deps.sh's env file,
// creating (and, in the returned cleanup, removing) a private database and
// bucket unless o names them, and applies the ClickHouse migrations.
func openStorage(ctx context.Context, o options) (storage, func(), error) {
	var cleanups []func(context.Context)
	cleanup := func() {
		cctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i](cctx)
		}
	}
	fail := func(err error) (storage, func(), error) {
		cleanup()
		return storage{}, func() {}, err
	}
	id := make([]byte, 4)
	_, _ = rand.Read(id)
	suffix := hex.EncodeToString(id)

	st := storage{ch: testenv.ClickHouseConfig("default")}
	admin := st.ch
	conn, err := admin.Open()
	if err != nil {
		return fail(err)
	}
	cleanups = append(cleanups, func(context.Context) { _ = conn.Close() })
	st.ch.Database = o.Database
	if st.ch.Database == "" {
		st.ch.Database = "bench_" + suffix
		if err := conn.Exec(ctx, "CREATE DATABASE "+st.ch.Database); err != nil {
			return fail(fmt.Errorf("create database on clickhouse %s: %w (is deploy/dev/deps.sh up?)", st.ch.Addr, err))
		}
		db := st.ch.Database
		cleanups = append(cleanups, func(cctx context.Context) {
			if err := conn.Exec(cctx, "DROP DATABASE IF EXISTS "+db); err != nil {
				fmt.Fprintf(o.Log, "bench: drop database %s: %v\n", db, err)
			}
		})
	}
	dbConn, err := st.ch.Open()
	if err != nil {
		return fail(err)
	}
	_, err = chschema.Migrate(ctx, dbConn)
	_ = dbConn.Close()
	if err != nil {
		return fail(fmt.Errorf("migrate %s: %w", st.ch.Database, err))
	}

	client, endpoint, err := testenv.S3Client()
	if err != nil {
		return fail(fmt.Errorf("s3 client %s: %w", endpoint, err))
	}
	st.s3Client = client
	st.s3 = testenv.S3Config()
	st.s3.Bucket = o.Bucket
	if st.s3.Bucket == "" {
		st.s3.Bucket = "bench-" + suffix
		if err := client.MakeBucket(ctx, st.s3.Bucket, minio.MakeBucketOptions{}); err != nil {
			return fail(fmt.Errorf("make bucket on s3 %s: %w (is deploy/dev/deps.sh up?)", endpoint, err))
		}
		bucket := st.s3.Bucket
		cleanups = append(cleanups, func(cctx context.Context) { removeBucket(cctx, o.Log, client, bucket) })
	}
	return st, cleanup, nil
}

// removeBucket deletes every object and incomplete upload in bucket, then
// the bucket.
func removeBucket(ctx context.Context, log io.Writer, c *minio.Client, bucket string) {
	objects := c.ListObjects(ctx, bucket, minio.ListObjectsOptions{Recursive: true})
	for r := range c.RemoveObjects(ctx, bucket, objects, minio.RemoveObjectsOptions{}) {
		fmt.Fprintf(log, "bench: remove %s/%s: %v\n", bucket, r.ObjectName, r.Err)
	}
	for u := range c.ListIncompleteUploads(ctx, bucket, "", true) {
		if u.Err == nil {
			_ = c.RemoveIncompleteUpload(ctx, bucket, u.Key)
		}
	}
	if err := c.RemoveBucket(ctx, bucket); err != nil {
		fmt.Fprintf(log, "bench: remove bucket %s: %v\n", bucket, err)
	}
}
