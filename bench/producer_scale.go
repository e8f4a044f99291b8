package main

// The producer scale phase (-producer-scale): one producer, as a process of
// its own (the `capstream` binary), on a node namespace with hundreds of
// Calico-style interfaces, and many captures that each select all of them.
// It shows the ring memory the node gives (one ring per interface, however
// many captures select it, within maxRingBytes), how many interfaces wait
// for the budget, the producer's peak RSS and its CPU, idle and under a
// little traffic on every interface, and checks that every capture got
// every packet its filter selects on every interface that opened.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/nats-io/nats.go"
	"golang.org/x/sys/unix"

	"github.com/capstream/capstream/internal/netns"
	"github.com/capstream/capstream/schemas"
)

const (
	// scaleNode is the node the scale phase's producer serves.
	scaleNode = "bench-scale-node"
	// scalePort is the UDP port of the scale traffic, which the filtered
	// captures select.
	scalePort = 9000
)

// scaleResult is what the producer scale phase measured.
type scaleResult struct {
	// Skipped is set without -producer-scale.
	Skipped bool
	// Interfaces and Captures are the phase's size; every capture
	// selects every interface, and every other one filters (UDP to
	// scalePort) where the rest take everything.
	Interfaces, Captures int
	// RingBytes and MaxRingBytes are the producer's afpacket.ringBytes
	// and maxRingBytes.
	RingBytes, MaxRingBytes int64
	// Setup is creating the interfaces; Open runs from the commands'
	// publish until the producer had opened what the budget allows.
	Setup, Open time.Duration
	// RingInUse is the most capstream_producer_ring_bytes scraped;
	// Sockets and Subscribers the shared sockets and subscriptions once
	// open; BudgetWaits the ring_budget_waits_total counter at the end.
	RingInUse, Sockets, Subscribers, BudgetWaits float64
	// Waiting is how many interfaces never opened (Interfaces - Sockets).
	Waiting int
	// PeakRSS is the producer's VmHWM (the mapped rings count in it);
	// PeakAnon the largest RssAnon sampled (its heap and stacks).
	PeakRSS, PeakAnon int64
	// Idle is how long the idle CPU was measured.
	Idle time.Duration
	// CPUIdle is the producer's CPU over Idle with every socket open
	// and no traffic; CPUTraffic its CPU from the first packet sent until
	// every capture reported every packet; CPU its CPU for the whole
	// phase.
	CPUIdle, CPUTraffic, CPU time.Duration
	// PacketsPerIface is what was sent on each interface; Packets what
	// the captures reported in their status, all together, against
	// Expected.
	PacketsPerIface  int
	Packets          uint64
	Expected         uint64
	KernelDrops      uint64
	PublishDrops     uint64
	Traffic, Wall    time.Duration
	Exit             string
	Problems         []string
	producerPid      int
	metricsURL       string
	statusMu         sync.Mutex
	status           map[string]*schemas.Status
	maxRing, maxAnon float64
}

// runProducerScale runs the phase; bin is the capstream binary, built if
// missing.
func runProducerScale(ctx context.Context, o options, dir string) (*scaleResult, error) {
	r := &scaleResult{Interfaces: o.ScaleInterfaces, Captures: o.ScaleCaptures, RingBytes: o.ScaleRingBytes, MaxRingBytes: o.ScaleMaxRingBytes,
		PacketsPerIface: 20, Idle: o.ScaleIdle, status: map[string]*schemas.Status{}}
	t0 := time.Now()
	bin := filepath.Join(dir, "capstream")
	if _, err := os.Stat(bin); err != nil {
		if err := buildBinary(ctx, bin); err != nil {
			return r, err
		}
	}
	if os.Geteuid() != 0 {
		return r, errors.New("the producer scale phase needs root (network namespaces, AF_PACKET)")
	}

	// The node: a namespace with one veth pair per interface, the cali
	// side captured, the other side sending.
	id := make([]byte, 3)
	_, _ = rand.Read(id)
	node := "csb-" + hex.EncodeToString(id)
	ts := time.Now()
	if err := netns.AddNode(ctx, netns.Node{Name: node, Addr: net.IPv4(10, 64, 0, 1)}); err != nil {
		return r, fmt.Errorf("node namespace: %w", err)
	}
	defer func() { _ = exec.Command("ip", "netns", "del", node).Run() }()
	var batch strings.Builder
	for i := range r.Interfaces {
		fmt.Fprintf(&batch, "link add %s type veth peer name %s\nlink set %s up\nlink set %s up\n", scaleIface(i), scalePeer(i), scaleIface(i), scalePeer(i))
	}
	cmd := exec.CommandContext(ctx, "ip", "-n", node, "-batch", "-")
	cmd.Stdin = strings.NewReader(batch.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return r, fmt.Errorf("create %d veths: %w: %s", r.Interfaces, err, out)
	}
	r.Setup = time.Since(ts)

	bus, err := startPhaseBus(dir, "scale")
	if err != nil {
		return r, err
	}
	defer bus.close()
	nc, js := bus.nc, bus.js
	if err := schemas.EnsureStreams(ctx, js, schemas.DefaultPacketsStreamLimits()); err != nil {
		return r, err
	}
	sub, err := nc.Subscribe(schemas.StatusSubjectsAll, func(m *nats.Msg) {
		if s, err := schemas.DecodeStatus(m.Data); err == nil && s.Source == schemas.SourceProducer {
			r.statusMu.Lock()
			r.status[s.Name] = s
			r.statusMu.Unlock()
		}
	})
	if err != nil {
		return r, err
	}
	defer func() { _ = sub.Unsubscribe() }()

	child, err := r.startProducer(ctx, o, dir, bin, bus.URL, netns.Path(node))
	if err != nil {
		return r, err
	}
	r.producerPid = child.Process.Pid
	// exited closes when the producer has exited, with its error in
	// exitErr.
	exited := make(chan struct{})
	var exitErr error
	go func() {
		exitErr = child.Wait()
		close(exited)
	}()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		_ = child.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
			if exitErr != nil {
				r.Exit = exitErr.Error()
			}
		case <-time.After(exitTimeout):
			_ = child.Process.Kill()
			<-exited
			r.Exit = fmt.Sprintf("killed: not exited %s after SIGTERM", exitTimeout)
		}
	}
	defer stop()
	samplerDone, stopSampler := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(samplerDone)
		t := time.NewTicker(rssEvery)
		defer t.Stop()
		for {
			r.sample()
			select {
			case <-stopSampler:
				return
			case <-t.C:
			}
		}
	}()
	// stopSampling ends the sampler, which writes maxAnon and maxRing;
	// they are read only after it.
	stopSampling := sync.OnceFunc(func() {
		close(stopSampler)
		<-samplerDone
	})
	defer stopSampling()
	cpu0 := procCPU(r.producerPid)
	if err := r.until(ctx, o.Timeout, exited, func() error { _, err := r.scrape("capstream_producer_captures"); return err }); err != nil {
		return r, fmt.Errorf("producer not serving metrics: %w", err)
	}

	// The captures.
	to := time.Now()
	for c := range r.Captures {
		cmd := &schemas.Command{Action: schemas.ActionCapture, Namespace: benchNamespace, Name: scaleCapture(c), UID: "uid-" + scaleCapture(c),
			Generation: 1, Node: scaleNode, IssuedAt: time.Now()}
		if c%2 == 1 {
			cmd.Filters = []schemas.Filter{{Protocol: "UDP", Ports: []string{strconv.Itoa(scalePort)}}}
		}
		for i := range r.Interfaces {
			cmd.Endpoints = append(cmd.Endpoints, schemas.Endpoint{Pod: fmt.Sprintf("scale-pod-%04d", i), Namespace: benchNamespace, Interface: scaleIface(i)})
		}
		data, err := schemas.EncodeCommand(cmd)
		if err != nil {
			return r, err
		}
		subj, err := schemas.CommandSubject(cmd.Node, cmd.Namespace, cmd.Name)
		if err != nil {
			return r, err
		}
		if _, err := js.Publish(ctx, subj, data); err != nil {
			return r, fmt.Errorf("publish command %s: %w", cmd.Name, err)
		}
	}
	fits := min(int64(r.Interfaces), r.MaxRingBytes/r.RingBytes)
	if err := r.until(ctx, o.Timeout, exited, func() error {
		sockets, err := r.scrape("capstream_producer_shared_sockets")
		if err != nil {
			return err
		}
		subs, _ := r.scrape("capstream_producer_shared_subscribers")
		if int64(sockets) < fits || int(subs) < r.Interfaces*r.Captures {
			return fmt.Errorf("%v of %d sockets open, %v of %d subscriptions", sockets, fits, subs, r.Interfaces*r.Captures)
		}
		return nil
	}); err != nil {
		return r, err
	}
	r.Open = time.Since(to)
	r.Sockets, _ = r.scrape("capstream_producer_shared_sockets")
	r.Subscribers, _ = r.scrape("capstream_producer_shared_subscribers")
	r.Waiting = r.Interfaces - int(r.Sockets)

	c1 := procCPU(r.producerPid)
	select {
	case <-time.After(r.Idle):
	case <-ctx.Done():
		return r, ctx.Err()
	}
	c2 := procCPU(r.producerPid)
	r.CPUIdle = c2 - c1

	// Traffic on every interface, from its peer; every capture selects
	// it (UDP to scalePort).
	tt := time.Now()
	if err := sendScale(node, r.Interfaces, r.PacketsPerIface); err != nil {
		return r, err
	}
	r.Expected = uint64(r.Sockets) * uint64(r.PacketsPerIface) * uint64(r.Captures)
	err = r.until(ctx, o.Timeout, exited, func() error {
		r.statusMu.Lock()
		defer r.statusMu.Unlock()
		var got uint64
		for _, s := range r.status {
			got += s.Packets
		}
		if got < r.Expected {
			return fmt.Errorf("captures reported %d of %d packets", got, r.Expected)
		}
		return nil
	})
	r.CPUTraffic = procCPU(r.producerPid) - c2
	r.Traffic = time.Since(tt)
	r.BudgetWaits, _ = r.scrape("capstream_producer_ring_budget_waits_total")
	if _, hwm, perr := procMem(r.producerPid); perr == nil {
		r.PeakRSS = hwm
	}
	r.CPU = procCPU(r.producerPid) - cpu0
	stop()
	r.Wall = time.Since(t0)
	r.statusMu.Lock()
	r.Packets = 0
	for _, s := range r.status {
		r.Packets += s.Packets
		r.KernelDrops += s.KernelDrops
		r.PublishDrops += s.PublishDrops
	}
	r.statusMu.Unlock()
	stopSampling()
	r.PeakAnon = int64(r.maxAnon)
	r.RingInUse = r.maxRing
	r.Problems = r.check()
	if err != nil {
		return r, err
	}
	return r, nil
}

func scaleIface(i int) string   { return fmt.Sprintf("calib%04d", i) }
func scalePeer(i int) string    { return fmt.Sprintf("peer%04d", i) }
func scaleCapture(c int) string { return fmt.Sprintf("scale-%02d", c) }

// startProducer writes the producer's configuration (connections, the node
// namespace and the ring sizes; every other setting is the default) and
// starts it.
func (r *scaleResult) startProducer(ctx context.Context, o options, dir, bin, natsURL, nsPath string) (*exec.Cmd, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	r.metricsURL = "http://" + addr + "/metrics"
	block := min(r.RingBytes, 1<<20)
	cfg := fmt.Sprintf(`node: %s
log:
  level: warn
  format: text
http:
  listen: %s
nats:
  url: %s
  name: capstream-producer
  # The phase's embedded server is local, plain and anonymous, as the
  # floor's: what is measured is the producer, not TLS.
  plaintext: true
  anonymous: true
producer:
  source: afpacket
  interfacePrefix: cali
  maxRingBytes: %d
  statusInterval: 1s
  afpacket:
    ringBytes: %d
    blockBytes: %d
    netns: %s
`, scaleNode, addr, natsURL, r.MaxRingBytes, r.RingBytes, block, nsPath)
	path := filepath.Join(dir, "producer-scale.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, bin, "producer", "--config", path)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = exitTimeout
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CAPSTREAM_PRODUCER_") {
			env = append(env, kv)
		}
	}
	cmd.Env = env
	cmd.Stdout = &prefixWriter{w: o.Log, prefix: "bench: producer: "}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start producer: %w", err)
	}
	return cmd, nil
}

// sample reads the producer's RssAnon and scrapes its ring gauge, keeping
// the largest of each.
func (r *scaleResult) sample() {
	if raw, err := os.ReadFile("/proc/" + strconv.Itoa(r.producerPid) + "/status"); err == nil {
		for line := range strings.Lines(string(raw)) {
			if k, v, ok := strings.Cut(line, ":"); ok && k == "RssAnon" {
				if f := strings.Fields(v); len(f) == 2 {
					kb, _ := strconv.ParseFloat(f[0], 64)
					r.maxAnon = max(r.maxAnon, kb*1024)
				}
			}
		}
	}
	if v, err := r.scrape("capstream_producer_ring_bytes"); err == nil {
		r.maxRing = max(r.maxRing, v)
	}
}

// scrape returns the sum of metric name on the producer's /metrics.
func (r *scaleResult) scrape(name string) (float64, error) {
	resp, err := http.Get(r.metricsURL)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	found, sum := false, 0.0
	for line := range strings.Lines(string(body)) {
		f := strings.Fields(line)
		if len(f) != 2 || (f[0] != name && !strings.HasPrefix(f[0], name+"{")) {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			return 0, err
		}
		found, sum = true, sum+v
	}
	if !found {
		return 0, fmt.Errorf("no %s on %s", name, r.metricsURL)
	}
	return sum, nil
}

// until polls fn every 100ms until it succeeds, the producer exits or
// timeout passes.
func (r *scaleResult) until(ctx context.Context, timeout time.Duration, exited <-chan struct{}, fn func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-exited:
			return fmt.Errorf("producer exited (waiting for: %w)", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// sendScale writes count UDP frames to scalePort on each peer veth of
// node, which its cali side receives.
func sendScale(node string, ifaces, count int) error {
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: net.IPv4(10, 65, 0, 2), DstIP: net.IPv4(10, 64, 0, 1)}
	udp := &layers.UDP{SrcPort: 40000, DstPort: scalePort}
	_ = udp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, ip, udp, gopacket.Payload(make([]byte, 100))); err != nil {
		return err
	}
	frame := buf.Bytes()
	return netns.Do(netns.Path(node), func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		defer unix.Close(fd)
		for i := range ifaces {
			ifc, err := net.InterfaceByName(scalePeer(i))
			if err != nil {
				return err
			}
			to := &unix.SockaddrLinklayer{Ifindex: ifc.Index, Halen: 6}
			copy(to.Addr[:], eth.DstMAC)
			for range count {
				if err := unix.Sendto(fd, frame, 0, to); err != nil {
					return fmt.Errorf("send on %s: %w", scalePeer(i), err)
				}
			}
		}
		return nil
	})
}

// check returns every way the phase went wrong.
func (r *scaleResult) check() []string {
	var probs []string
	if r.RingInUse > float64(r.MaxRingBytes) {
		probs = append(probs, fmt.Sprintf("producer scale: %.0f ring bytes in use, over maxRingBytes %d", r.RingInUse, r.MaxRingBytes))
	}
	if want := float64(min(int64(r.Interfaces), r.MaxRingBytes/r.RingBytes) * r.RingBytes); r.RingInUse != want {
		probs = append(probs, fmt.Sprintf("producer scale: %.0f ring bytes in use, want one ring per open interface: %.0f", r.RingInUse, want))
	}
	if r.Packets != r.Expected || r.KernelDrops != 0 || r.PublishDrops != 0 {
		probs = append(probs, fmt.Sprintf("producer scale: captures reported %d packets (kernel drops %d, publish drops %d), want %d",
			r.Packets, r.KernelDrops, r.PublishDrops, r.Expected))
	}
	if r.Exit != "" {
		probs = append(probs, "producer scale: the producer did not exit cleanly on SIGTERM: "+r.Exit)
	}
	return probs
}

// report is the phase's lines of the bench report.
func (r *scaleResult) report() string {
	if r == nil || r.Skipped {
		return "producer scale: skipped (-producer-scale=false)\n"
	}
	var sb strings.Builder
	const mib = 1 << 20
	open := int(r.Sockets)
	fmt.Fprintf(&sb, "producer scale (one producer process, %d interfaces in a node namespace, %d captures each selecting all of them, every other one filtering UDP/%d; afpacket.ringBytes %d MiB, maxRingBytes %d MiB; phase %s, %d veths made in %s):\n",
		r.Interfaces, r.Captures, scalePort, r.RingBytes/mib, r.MaxRingBytes/mib, r.Wall.Round(time.Millisecond), r.Interfaces, r.Setup.Round(time.Millisecond))
	fmt.Fprintf(&sb, "  rings: %.0f MiB in use of the %d MiB budget = %d open interfaces x %d MiB (%d interfaces wait for the budget, %v budget waits counted); %v sockets carry %v subscriptions, opened %s after the commands; without sharing the %d x %d selections would ask for %d MiB\n",
		r.RingInUse/mib, r.MaxRingBytes/mib, open, r.RingBytes/mib, r.Waiting, r.BudgetWaits, r.Sockets, r.Subscribers, r.Open.Round(time.Millisecond),
		r.Captures, r.Interfaces, int64(r.Captures*r.Interfaces)*r.RingBytes/mib)
	fmt.Fprintf(&sb, "  producer peak RSS (VmHWM of the producer process, its mapped rings included) %.1f MiB, of which anonymous (heap, stacks) at most %.1f MiB (RssAnon sampled every %s)\n",
		float64(r.PeakRSS)/mib, float64(r.PeakAnon)/mib, rssEvery)
	fmt.Fprintf(&sb, "  producer CPU: idle with every socket open %.3f cores (%s over %s); %d packets sent (%d per interface) stored %d times in %s with %s CPU (%.2f µs per packet stored); whole phase %s\n",
		r.CPUIdle.Seconds()/r.Idle.Seconds(), r.CPUIdle.Round(time.Millisecond), r.Idle, r.Interfaces*r.PacketsPerIface, r.PacketsPerIface,
		r.Packets, r.Traffic.Round(time.Millisecond), r.CPUTraffic.Round(time.Millisecond), float64(r.CPUTraffic.Microseconds())/float64(max(r.Packets, 1)), r.CPU.Round(time.Millisecond))
	mark := "met"
	if r.RingInUse > float64(r.MaxRingBytes) || len(r.Problems) > 0 {
		mark = "MISSED"
	}
	fmt.Fprintf(&sb, "  %-6s ring memory within the node budget, every capture got every selected packet: %.0f of %d MiB, %d of %d packets\n",
		mark, r.RingInUse/mib, r.MaxRingBytes/mib, r.Packets, r.Expected)
	return sb.String()
}

// scaleDefaults are the phase's flag defaults: 2 MiB rings fit 500
// interfaces in the producer's default 1 GiB budget only because the ten
// captures share each interface's ring.
var scaleDefaults = struct {
	ifaces, captures int
	ring, budget     int64
	idle             time.Duration
}{500, 10, 2 << 20, 1 << 30, 5 * time.Second}
