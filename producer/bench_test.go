package producer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/semaphore"

	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/schemas"
)

// bareBatches cuts the records of a pcap file into bodies exactly as the
// batcher does with maxBytes.
func bareBatches(tb testing.TB, path string, maxBytes int) (bodies [][]byte, packets []uint32) {
	tb.Helper()
	recs, err := testenv.ReadPcap(path)
	if err != nil {
		tb.Fatal(err)
	}
	var cur []byte
	var n uint32
	for _, r := range recs {
		if n > 0 && len(cur)+schemas.RecordHeaderLen+len(r.Data) > maxBytes {
			bodies, packets = append(bodies, cur), append(packets, n)
			cur, n = nil, 0
		}
		cur = schemas.AppendRecord(cur, r.Info.Timestamp, r.Data, r.Info.Length)
		n++
	}
	if n > 0 {
		bodies, packets = append(bodies, cur), append(packets, n)
	}
	return bodies, packets
}

// publishBare publishes bodies with PublishMsgAsync under the same
// in-flight byte bound as the producer and waits for every ack.
func publishBare(tb testing.TB, js jetstream.JetStream, bodies [][]byte, packets []uint32, epoch string, maxInFlight int64) {
	tb.Helper()
	sem := semaphore.NewWeighted(maxInFlight)
	subj, _ := schemas.PacketSubject("default", "bare", testNode)
	futs := make(chan jetstream.PubAckFuture, 4096)
	var wg sync.WaitGroup
	var failed int
	wg.Go(func() {
		i := 0
		for f := range futs {
			select {
			case <-f.Ok():
			case <-f.Err():
				failed++
			}
			sem.Release(int64(len(bodies[i])))
			i++
		}
	})
	hdr := schemas.BatchHeader{Namespace: "default", Capture: "bare", CaptureUID: "uid-bare", Node: testNode, Pod: "p",
		Interface: "replay0", LinkType: schemas.LinkTypeEthernet, SnapLength: schemas.MaxSnapLength, Producer: epoch}
	for i, body := range bodies {
		if err := sem.Acquire(context.Background(), int64(len(body))); err != nil {
			tb.Fatal(err)
		}
		hdr.Seq, hdr.Packets = uint64(i+1), packets[i]
		msg := &nats.Msg{Subject: subj, Header: make(nats.Header, 13), Data: body}
		hdr.Encode(msg.Header)
		f, err := js.PublishMsgAsync(msg)
		if err != nil {
			tb.Fatal(err)
		}
		futs <- f
	}
	close(futs)
	wg.Wait()
	if failed > 0 {
		tb.Fatalf("bare publish: %d batches failed", failed)
	}
}

// BenchmarkReplayToJetStream replays a generated pcap (many flows, mixed
// sizes) through the producer (file source, as fast as possible) and,
// in the same iteration, publishes the same bodies in the same batch
// sizes with a bare PublishMsgAsync loop. It reports both throughputs and
// their ratio (producer / bare).
func BenchmarkReplayToJetStream(b *testing.B) {
	srv := testenv.NATS(b)
	ctx := context.Background()
	ensureStreams(b, srv)
	stream, err := srv.JS.Stream(ctx, schemas.StreamPackets)
	if err != nil {
		b.Fatal(err)
	}
	path := b.TempDir() + "/big.pcap"
	const packets = 60000
	total := genPcap(b, path, packets, 10*time.Microsecond)
	cfg := DefaultConfig()
	cfg.Node = testNode
	cfg.Source, cfg.InterfacePrefix = SourceFile, "replay"
	cfg.File.Files = map[string]string{"replay0": path}
	cfg.StatusInterval = time.Hour // status only on state changes
	bodies, counts := bareBatches(b, path, cfg.BatchBytes)
	var bodyBytes int64
	for _, body := range bodies {
		bodyBytes += int64(len(body))
	}

	reg := prometheus.NewRegistry()
	p, err := New(cfg, Deps{Logger: testenv.Logger(b), Registerer: reg, NATS: connect(b, srv.URL, testenv.Logger(b))})
	if err != nil {
		b.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(runCtx) }()
	defer func() { cancel(); <-done }()
	testenv.Eventually(b, 10*time.Second, p.Ready)
	finished := make(chan string, 16)
	sub, err := srv.Conn.Subscribe(schemas.StatusSubjectsAll, func(m *nats.Msg) {
		if s, err := schemas.DecodeStatus(m.Data); err == nil && s.State == schemas.StateFinished {
			finished <- s.Name
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Unsubscribe()

	var bare, prod time.Duration
	iter := 0
	b.SetBytes(bodyBytes)
	b.ReportAllocs()
	runBare := func() {
		start := time.Now()
		publishBare(b, srv.JS, bodies, counts, fmt.Sprintf("bare%d", iter), int64(cfg.MaxInFlightBytes))
		bare += time.Since(start)
		if err := stream.Purge(ctx); err != nil {
			b.Fatal(err)
		}
	}
	runProducer := func() {
		name := fmt.Sprintf("replay-%d", iter)
		acked0 := testenv.Metric(b, reg, "capstream_producer_batches_acked_total", nil)
		start := time.Now()
		data, _ := schemas.EncodeCommand(&schemas.Command{Action: schemas.ActionCapture, Namespace: "default", Name: name,
			UID: fmt.Sprintf("uid-%d", iter), Node: testNode, IssuedAt: time.Now(),
			Endpoints: []schemas.Endpoint{{Pod: "p", Namespace: "default", Interface: "replay0"}}})
		subj, _ := schemas.CommandSubject(testNode, "default", name)
		if _, err := srv.JS.Publish(ctx, subj, data); err != nil {
			b.Fatal(err)
		}
		for n := range finished {
			if n == name {
				break
			}
		}
		for testenv.Metric(b, reg, "capstream_producer_batches_acked_total", nil)-acked0 < float64(len(bodies)) {
			if d := testenv.Metric(b, reg, "capstream_producer_publish_drops_total", nil); d > 0 {
				b.Fatalf("producer dropped %v packets", d)
			}
			time.Sleep(time.Millisecond)
		}
		prod += time.Since(start)
		if err := stream.Purge(ctx); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		iter++
		// Alternate the order so neither side always runs first.
		if iter%2 == 1 {
			runBare()
			runProducer()
		} else {
			runProducer()
			runBare()
		}
	}
	mb := func(d time.Duration) float64 { return float64(bodyBytes) * float64(iter) / d.Seconds() / 1e6 }
	b.ReportMetric(mb(prod), "producer-MB/s")
	b.ReportMetric(mb(bare), "bare-MB/s")
	b.ReportMetric(bare.Seconds()/prod.Seconds(), "ratio")
	b.ReportMetric(float64(packets)*float64(iter)/prod.Seconds(), "producer-pkt/s")
	b.Logf("%d packets, %d frame bytes, %d batches of up to %d bytes; producer %.0f MB/s, bare %.0f MB/s, ratio %.2f",
		packets, total, len(bodies), cfg.BatchBytes, mb(prod), mb(bare), bare.Seconds()/prod.Seconds())
}

// envHelperConfig carries the JSON Config of TestProducerHelperProcess.
const envHelperConfig = "CAPSTREAM_PRODUCER_HELPER_CONFIG"

// TestProducerHelperProcess is not a test: benchmarks run it in a child
// process (the test binary re-executed) so that the producer's memory can
// be measured apart from the embedded NATS server. It runs a producer
// until SIGTERM.
func TestProducerHelperProcess(t *testing.T) {
	raw := os.Getenv(envHelperConfig)
	if raw == "" {
		t.Skip("helper process for benchmarks")
	}
	var hc helperConfig
	if err := json.Unmarshal([]byte(raw), &hc); err != nil {
		t.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	p, err := New(hc.Producer, Deps{Logger: logger, Registerer: prometheus.NewRegistry(), NATS: connect(t, hc.URL, logger)})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Run(ctx); err != nil {
		t.Fatal(err)
	}
}

// helperConfig is what TestProducerHelperProcess runs: a producer and the
// NATS server it connects to.
type helperConfig struct {
	Producer Config
	URL      string
}

// helperProducer starts TestProducerHelperProcess with cfg, connected to
// the server at url.
func helperProducer(tb testing.TB, cfg Config, url string) (pid int, stop func()) {
	tb.Helper()
	raw, err := json.Marshal(helperConfig{Producer: cfg, URL: url})
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestProducerHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), envHelperConfig+"="+string(raw))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			_ = cmd.Wait()
		})
	}
	tb.Cleanup(stop)
	return cmd.Process.Pid, stop
}

// procMem returns VmHWM and VmRSS of pid, in bytes.
func procMem(pid int) (hwm, rss int64) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmHWM:":
			hwm = kb << 10
		case "VmRSS:":
			rss = kb << 10
		}
	}
	return hwm, rss
}

// blastSenders is how many sockets blast in parallel; two saturate this
// two-core machine.
const blastSenders = 2

// blast sends 200-byte UDP datagrams from pod a to pod b as fast as
// blastSenders sockets can for d and returns how many were sent. b binds
// the port but never reads, so b answers nothing and the only traffic is
// the blast.
func blast(tb testing.TB, a, b *testenv.PodNet, d time.Duration) int {
	tb.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	total := 0
	for i := range blastSenders {
		wg.Go(func() {
			n := blastOne(tb, a, b, 9999+i, d)
			mu.Lock()
			total += n
			mu.Unlock()
		})
	}
	wg.Wait()
	return total
}

func blastOne(tb testing.TB, a, b *testenv.PodNet, port int, d time.Duration) int {
	tb.Helper()
	var sink net.PacketConn
	if err := b.Do(func() error {
		var err error
		sink, err = net.ListenPacket("udp4", fmt.Sprintf(":%d", port))
		return err
	}); err != nil {
		tb.Error(err)
		return 0
	}
	defer sink.Close()
	var conn *net.UDPConn
	if err := a.Do(func() error {
		c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: b.IPv4, Port: port})
		conn = c
		return err
	}); err != nil {
		tb.Error(err)
		return 0
	}
	defer conn.Close()
	payload := make([]byte, 200)
	sent := 0
	end := time.Now().Add(d)
	for i := 0; ; i++ {
		if i&1023 == 0 && time.Now().After(end) {
			break
		}
		if _, err := conn.Write(payload); err == nil {
			sent++
		}
	}
	return sent
}

var tcpdumpStats = regexp.MustCompile(`(\d+) packets captured[\s\S]*?(\d+) packets received by filter[\s\S]*?(\d+) packets dropped by kernel`)

// BenchmarkLiveUDPBlast blasts UDP from pod a to pod b and captures a's
// host veth with the producer (in a child process, so its memory can be
// measured) and tcpdump side by side. It reports captured/sent for both,
// the producer's kernel drops and peak RSS. The "outage" variant stops
// JetStream for the blast: the producer must drop and count, not grow.
// Needs root; each iteration blasts for two seconds.
func BenchmarkLiveUDPBlast(b *testing.B) {
	for _, outage := range []bool{false, true} {
		b.Run(fmt.Sprintf("jetstream-down=%v", outage), func(b *testing.B) { benchBlast(b, outage) })
	}
}

func benchBlast(b *testing.B, outage bool) {
	node := testenv.NetNode(b, podsABC[:2]...)
	a, pb := node.Pods[0], node.Pods[1]
	srv := testenv.NATS(b)
	ctx := context.Background()
	ensureStreams(b, srv)
	stream, _ := srv.JS.Stream(ctx, schemas.StreamPackets)
	commands, _ := srv.JS.Stream(ctx, schemas.StreamCommands)
	var mu sync.Mutex
	var last *schemas.Status
	sub, err := srv.Conn.Subscribe(schemas.StatusSubjectsAll, func(m *nats.Msg) {
		if s, err := schemas.DecodeStatus(m.Data); err == nil {
			mu.Lock()
			last = s
			mu.Unlock()
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Unsubscribe()
	status := func() *schemas.Status { mu.Lock(); defer mu.Unlock(); return last }

	var sent, prodPkts, prodKDrops, prodPDrops, dumpPkts, dumpDrops int
	var hwm int64
	cfg := DefaultConfig()
	var dur time.Duration
	for b.Loop() {
		cfg.Node = testNode
		cfg.AFPacket.NetNS = "/var/run/netns/" + node.NetNS
		cfg.StatusInterval = 200 * time.Millisecond
		cfg.GracePeriod = 5 * time.Second
		pid, stopProducer := helperProducer(b, cfg, srv.URL)
		name := fmt.Sprintf("blast-%d", time.Now().UnixNano())
		data, _ := schemas.EncodeCommand(&schemas.Command{Action: schemas.ActionCapture, Namespace: "default", Name: name,
			UID: "uid-" + name[6:], Node: testNode, IssuedAt: time.Now(),
			Endpoints: []schemas.Endpoint{{Pod: a.Name, Namespace: a.Namespace, Interface: a.HostIface}}})
		subj, _ := schemas.CommandSubject(testNode, "default", name)
		if _, err := srv.JS.Publish(ctx, subj, data); err != nil {
			b.Fatal(err)
		}
		// The capture is open once it reports; give the socket a moment.
		testenv.Eventually(b, 10*time.Second, func() error {
			if s := status(); s == nil || s.Name != name {
				return errors.New("no status yet")
			}
			return nil
		})
		time.Sleep(300 * time.Millisecond)

		path := b.TempDir() + "/dump.pcap"
		dump := exec.Command("ip", "netns", "exec", node.NetNS, "tcpdump", "-i", a.HostIface, "-w", path, "-n",
			"-s", "262144", "-B", strconv.Itoa(cfg.AFPacket.RingBytes>>10), "-Z", "root")
		var stderr testenv.Buffer
		dump.Stderr = &stderr
		if err := dump.Start(); err != nil {
			b.Fatal(err)
		}
		testenv.Eventually(b, 5*time.Second, func() error {
			if !strings.Contains(stderr.String(), "listening on") {
				return errors.New("tcpdump not listening")
			}
			return nil
		})
		if outage {
			srv.Stop()
		}
		start := time.Now()
		sent += blast(b, a, pb, 2*time.Second)
		dur += time.Since(start)
		h, _ := procMem(pid)
		hwm = max(hwm, h)
		time.Sleep(500 * time.Millisecond) // let both rings drain
		_ = dump.Process.Signal(os.Interrupt)
		_ = dump.Wait()
		m := tcpdumpStats.FindStringSubmatch(stderr.String())
		if m == nil {
			b.Fatalf("tcpdump stats not found in %q", stderr.String())
		}
		n, _ := strconv.Atoi(m[1])
		d, _ := strconv.Atoi(m[3])
		dumpPkts += n
		dumpDrops += d
		if outage {
			if err := srv.Start(); err != nil {
				b.Fatal(err)
			}
		}
		// Wait for a periodic report with the blast in it (after the
		// outage: once the producer has reconnected), then stop.
		testenv.Eventually(b, 15*time.Second, func() error {
			s := status()
			if s == nil || s.Name != name || s.Packets < uint64(n/2) {
				return fmt.Errorf("no status with the blast yet: %+v", s)
			}
			return nil
		})
		h, _ = procMem(pid)
		hwm = max(hwm, h)
		stopProducer()
		time.Sleep(300 * time.Millisecond) // the final report follows the last periodic one
		s := status()
		prodPkts += int(s.Packets)
		prodKDrops += int(s.KernelDrops)
		prodPDrops += int(s.PublishDrops)
		_ = stream.Purge(ctx)
		// The next iteration's producer must not replay this capture
		// (it would open a second ring on the interface).
		_ = commands.Purge(ctx)
	}
	b.ReportMetric(float64(sent)/dur.Seconds(), "sent-pkt/s")
	b.ReportMetric(float64(prodPkts)/float64(sent), "producer-captured/sent")
	b.ReportMetric(float64(dumpPkts)/float64(sent), "tcpdump-captured/sent")
	b.ReportMetric(float64(prodKDrops), "producer-kernel-drops")
	b.ReportMetric(float64(prodPDrops), "producer-publish-drops")
	b.ReportMetric(float64(hwm)/(1<<20), "producer-peak-RSS-MiB")
	b.Logf("sent %d in %v (%.0f pkt/s); producer captured %d (kernel drops %d, publish drops %d); tcpdump captured %d (kernel drops %d); producer peak RSS %.1f MiB with a %d MiB ring",
		sent, dur, float64(sent)/dur.Seconds(), prodPkts, prodKDrops, prodPDrops, dumpPkts, dumpDrops, float64(hwm)/(1<<20), cfg.AFPacket.RingBytes>>20)
}
