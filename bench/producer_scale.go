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
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
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
	// PeakAnon the largest RssAnon sampled (its heap and stacks),
	// PeakFile the largest RssFile (the binary's pages) and PeakShmem the
	// largest RssShmem (the rings).
	PeakRSS, PeakAnon, PeakFile, PeakShmem int64
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
	PacketsPerIface int
	// Packets excludes Warmup, the packets of the warm-up rounds that
	// made sure every interface delivers before the traffic.
	Packets, Warmup   uint64
	Expected          uint64
	KernelDrops       uint64
	PublishDrops      uint64
	Traffic, Wall     time.Duration
	Exit              string
	Problems          []string
	producer          *proc
	statusMu          sync.Mutex
	status            map[string]*schemas.Status
	maxRing, maxAnon  float64
	maxFile, maxShmem float64
}

// runProducerScale runs the phase; bin is the capstream binary, built if
// missing.
func runProducerScale(ctx context.Context, o options, dir string) (*scaleResult, error) {
	r := &scaleResult{Interfaces: o.ScaleInterfaces, Captures: o.ScaleCaptures, RingBytes: o.ScaleRingBytes, MaxRingBytes: o.ScaleMaxRingBytes,
		PacketsPerIface: o.ScalePacketsPerIface, Idle: o.ScaleIdle, status: map[string]*schemas.Status{}}
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

	if r.producer, err = r.startProducer(ctx, o, dir, bin, bus.URL, netns.Path(node)); err != nil {
		return r, err
	}
	defer func() { r.Exit = r.producer.stop() }()
	// stopSampling ends the sampler, which writes maxAnon and maxRing;
	// they are read only after it.
	stopSampling := sampleEvery(rssEvery, r.sample)
	defer stopSampling()
	cpu0 := procCPU(r.producer.pid())
	if err := r.producer.until(ctx, o.Timeout, func() error { _, err := r.producer.scrape("capstream_producer_captures"); return err }); err != nil {
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
	if err := r.producer.until(ctx, o.Timeout, func() error {
		sockets, err := r.producer.scrape("capstream_producer_shared_sockets")
		if err != nil {
			return err
		}
		subs, _ := r.producer.scrape("capstream_producer_shared_subscribers")
		if int64(sockets) < fits || int(subs) < r.Interfaces*r.Captures {
			return fmt.Errorf("%v of %d sockets open, %v of %d subscriptions", sockets, fits, subs, r.Interfaces*r.Captures)
		}
		return nil
	}); err != nil {
		return r, err
	}
	r.Open = time.Since(to)
	r.Sockets, _ = r.producer.scrape("capstream_producer_shared_sockets")
	r.Subscribers, _ = r.producer.scrape("capstream_producer_shared_subscribers")
	r.Waiting = r.Interfaces - int(r.Sockets)

	c1 := procCPU(r.producer.pid())
	select {
	case <-time.After(r.Idle):
	case <-ctx.Done():
		return r, ctx.Err()
	}
	c2 := procCPU(r.producer.pid())
	r.CPUIdle = c2 - c1

	// A socket counts as open a moment before its packets flow: send one
	// packet on every interface until one round reaches every capture on
	// every open interface, so the traffic below is all seen (on a loaded
	// machine a burst sent at once would otherwise lose its start).
	reported := func() uint64 {
		r.statusMu.Lock()
		defer r.statusMu.Unlock()
		var got uint64
		for _, s := range r.status {
			got += s.Packets
		}
		return got
	}
	round := uint64(r.Sockets) * uint64(r.Captures)
	if err := r.producer.until(ctx, o.Timeout, func() error {
		before := reported()
		if err := sendScale(node, r.Interfaces, 1); err != nil {
			return err
		}
		time.Sleep(1500 * time.Millisecond) // more than statusInterval (1s)
		if got := reported() - before; got < round {
			return fmt.Errorf("a warm-up packet on every interface reached %d of %d captures' interfaces", got, round)
		}
		return nil
	}); err != nil {
		return r, err
	}
	// Traffic on every interface, from its peer; every capture selects
	// it (UDP to scalePort).
	r.Warmup = reported()
	c3 := procCPU(r.producer.pid())
	tt := time.Now()
	if err := sendScale(node, r.Interfaces, r.PacketsPerIface); err != nil {
		return r, err
	}
	r.Expected = uint64(r.Sockets) * uint64(r.PacketsPerIface) * uint64(r.Captures)
	err = r.producer.until(ctx, o.Timeout, func() error {
		if got := reported() - r.Warmup; got < r.Expected {
			return fmt.Errorf("captures reported %d of %d packets", got, r.Expected)
		}
		return nil
	})
	r.CPUTraffic = procCPU(r.producer.pid()) - c3
	r.Traffic = time.Since(tt)
	r.BudgetWaits, _ = r.producer.scrape("capstream_producer_ring_budget_waits_total")
	if _, hwm, perr := procMem(r.producer.pid()); perr == nil {
		r.PeakRSS = hwm
	}
	r.CPU = procCPU(r.producer.pid()) - cpu0
	r.Exit = r.producer.stop()
	r.Wall = time.Since(t0)
	r.statusMu.Lock()
	r.Packets = 0
	for _, s := range r.status {
		r.Packets += s.Packets
		r.KernelDrops += s.KernelDrops
		r.PublishDrops += s.PublishDrops
	}
	r.statusMu.Unlock()
	r.Packets -= min(r.Warmup, r.Packets)
	stopSampling()
	r.PeakAnon, r.PeakFile, r.PeakShmem = int64(r.maxAnon), int64(r.maxFile), int64(r.maxShmem)
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
func (r *scaleResult) startProducer(ctx context.Context, o options, dir, bin, natsURL, nsPath string) (*proc, error) {
	block := min(r.RingBytes, 1<<20)
	cfg := fmt.Sprintf("node: %s\n", scaleNode) + natsYAML(natsURL, "capstream-producer") + fmt.Sprintf(`producer:
  source: afpacket
  interfacePrefix: cali
  maxRingBytes: %d
  statusInterval: 1s
  afpacket:
    ringBytes: %d
    blockBytes: %d
    netns: %s
`, r.MaxRingBytes, r.RingBytes, block, nsPath)
	// Scraped without a timeout: the sampler's ring figure is checked
	// exactly, and a busy producer may answer late.
	return startProc(ctx, o.Log, dir, bin, procSpec{Args: []string{"producer"}, Name: "producer", Config: cfg, File: "producer-scale.yaml",
		Drop: []string{"CAPSTREAM_PRODUCER_"}, Client: http.DefaultClient})
}

// sample reads the producer's RssAnon and scrapes its ring gauge, keeping
// the largest of each.
func (r *scaleResult) sample() {
	if f, err := procStatus(r.producer.pid(), "RssAnon", "RssFile", "RssShmem"); err == nil {
		r.maxAnon = max(r.maxAnon, float64(f["RssAnon"]))
		r.maxFile = max(r.maxFile, float64(f["RssFile"]))
		r.maxShmem = max(r.maxShmem, float64(f["RssShmem"]))
	}
	if v, err := r.producer.scrape("capstream_producer_ring_bytes"); err == nil {
		r.maxRing = max(r.maxRing, v)
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
