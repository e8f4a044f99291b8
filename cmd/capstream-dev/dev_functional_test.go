package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/capstream/capstream/internal/netsim"
	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/producer"
	"github.com/capstream/capstream/schemas"
	v3 "github.com/capstream/capstream/schemas/v3"
)

// TestDevPipelineLive runs `capstream-dev`'s wiring in-process: embedded
// JetStream, router, a live AF_PACKET producer inside a simulated node,
// both sinks, against the real ClickHouse, S3 and kube-apiserver. It
// applies the seed's sample capture and checks what a user would look at:
// pcap objects holding the pods' packets, flow rows with the L7 hints,
// and the capture's status.
func TestDevPipelineLive(t *testing.T) {
	testenv.RequireRoot(t)
	ch := testenv.ClickHouse(t)
	bucket := testenv.S3(t)
	k := testenv.Kube(t)
	ns := k.Namespace(t, nil)

	cfg := devTestSettings(t, ch, bucket, k, ns, "dev-test-node")
	cfg.Producer.AFPacket.RingBytes = 4 << 20
	cfg.Simulate.Enabled = true
	cfg.Simulate.Node = "dev-test-node"
	cfg.Simulate.Namespace = ns
	cfg.Simulate.NetNS = "csdev-" + ns[len(ns)-6:]
	cfg.Simulate.Interval = 300 * time.Millisecond

	var sim *netsim.Simulator
	stop, _ := startDev(t, cfg, func(s *netsim.Simulator) { sim = s })
	uid := applySample(t, k, ns)

	// Objects: completed pcaps under the capture's prefix, for both
	// selected pods and not for the third.
	keys := waitObjects(t, bucket, schemas.CaptureDir(cfg.Pcap.Prefix, ns, "sample-capture", uid)+"dev-test-node/")
	ports := map[uint16]int{}
	for _, key := range keys {
		if strings.Contains(key, "sample-web_") {
			countPorts(t, bucket, key, ports)
		}
	}
	for _, p := range []uint16{80, 443, 53} {
		if ports[p] == 0 {
			t.Errorf("no packets to or from port %d in sample-web's objects (ports seen: %v)", p, ports)
		}
	}

	// Flows: one row per protocol with its L7 hint.
	host := "sample-web." + ns + ".svc.cluster.local"
	// Waiting for: flow rows with HTTP host, TLS SNI and DNS query.
	testenv.Eventually(t, 60*time.Second, func() error {
		var httpN, tlsN, dnsN uint64
		err := ch.Conn.QueryRow(t.Context(), `SELECT countIf(http_host = ? AND resp_port = 80), countIf(tls_sni = ? AND resp_port = 443),
			countIf(dns_query = ? AND resp_port = 53) FROM flows FINAL WHERE namespace = ? AND capture = 'sample-capture'`,
			host, host, host, ns).Scan(&httpN, &tlsN, &dnsN)
		if err != nil {
			return err
		}
		if httpN == 0 || tlsN == 0 || dnsN == 0 {
			return fmt.Errorf("http %d, tls %d, dns %d rows", httpN, tlsN, dnsN)
		}
		return nil
	})

	// Status: the router wrote the producer's and the sink's reports.
	// Waiting for: capture status.
	testenv.Eventually(t, 30*time.Second, func() error {
		st, err := captureStatus(t, k, ns)
		if err != nil {
			return err
		}
		if st.Packets == 0 || st.Objects == 0 || len(st.Files) != 1 || st.Files[0].Node != "dev-test-node" ||
			st.Files[0].State == nil || *st.Files[0].State != v3.StateCapturing || len(st.Files[0].FileNames) == 0 {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	if st := sim.Stats(); st.OK == 0 || st.Failed != 0 {
		t.Errorf("simulated exchanges: %+v", st)
	}

	stop()
	if _, err := os.Stat(netsim.NetNSPath(cfg.Simulate.NetNS)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("simulated node's netns left behind: %v", err)
	}
}

// TestDevPipelineReplay runs the dev wiring with the file source, which
// needs no root: every selected interface replays a generated pcap of one
// HTTP exchange and one DNS lookup. The objects must hold exactly the
// replayed packets, the flows their L7 names, the status their count.
func TestDevPipelineReplay(t *testing.T) {
	r := startReplay(t, "replay-node", "10.70.0", true)
	ch, bucket, k, ns, node, n := r.ch, r.bucket, r.k, r.ns, r.node, r.packets
	host := "sample-web." + ns + ".svc.cluster.local"
	keys := r.keys
	ports := map[uint16]int{}
	total := 0
	for _, key := range keys {
		total += countPorts(t, bucket, key, ports)
	}
	if total != 2*n || ports[80] != 2*n-4 || ports[53] != 4 {
		t.Errorf("objects hold %d packets (ports %v), want %d: the file once per selected pod", total, ports, 2*n)
	}
	// Waiting for: flow rows with HTTP host and DNS query.
	testenv.Eventually(t, 60*time.Second, func() error {
		var httpN, dnsN uint64
		err := ch.Conn.QueryRow(t.Context(), `SELECT countIf(http_host = ? AND resp_port = 80 AND conn_state = 'SF'), countIf(dns_query = ? AND resp_port = 53)
			FROM flows FINAL WHERE namespace = ? AND capture = 'sample-capture'`, host, host, ns).Scan(&httpN, &dnsN)
		if err != nil {
			return err
		}
		if httpN != 2 || dnsN != 2 {
			return fmt.Errorf("http %d, dns %d rows; want 2 each (one per pod)", httpN, dnsN)
		}
		return nil
	})
	// Waiting for: capture status.
	testenv.Eventually(t, 30*time.Second, func() error {
		st, err := captureStatus(t, k, ns)
		if err != nil {
			return err
		}
		if st.Packets != int64(2*n) || st.Objects < 2 || len(st.Files) != 1 || st.Files[0].Node != node {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
}

// TestDevListenerTaken: when the health and metrics port is taken, the
// whole pipeline stops with the listener's error instead of running on
// without /readyz.
func TestDevListenerTaken(t *testing.T) {
	ch, bucket, k := testenv.ClickHouse(t), testenv.S3(t), testenv.Kube(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := devTestSettings(t, ch, bucket, k, k.Namespace(t, nil), "taken-node")
	cfg.Producer.Source = producer.SourceFile
	cfg.HTTP.Listen = ln.Addr().String()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	// Were the listener's failure ignored, runDev would run until this
	// context ends and then return nil.
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := runDev(ctx, cfg, nil); err == nil || !strings.Contains(err.Error(), "listen "+cfg.HTTP.Listen) {
		t.Errorf("runDev = %v, want the listener's error", err)
	}
	if ctx.Err() != nil {
		t.Error("runDev ran until the test's deadline after its listener failed")
	}
}
