package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/capstream/capstream/internal/testenv"
)

// TestDevPipelineNoCleartext captures the loopback with tcpdump while the
// dev pipeline replays traffic through NATS, ClickHouse and S3, all on
// 127.0.0.1, and looks through every TCP stream to those three ports for
// what an attacker on the host would want: the ClickHouse password, the S3
// secret key, the monitor identity's NATS password, and the replayed
// traffic's HTTP Host (in every batch, object and flow row). None may be
// there in clear text. That the capture saw the pipeline's traffic at all
// is checked too: every port carried bytes, and the marker did reach S3
// and ClickHouse.
func TestDevPipelineNoCleartext(t *testing.T) {
	testenv.RequireRoot(t)
	tcpdump := requireTool(t, "tcpdump", "")
	natsPort := freePort(t)
	chAddr := testenv.ClickHouseConfig("").Addr
	s3Addr := testenv.Getenv(testenv.EnvS3Endpoint)
	ports := map[string]uint16{"nats": natsPort, "clickhouse": portOf(t, chAddr), "s3": portOf(t, s3Addr)}
	filter := fmt.Sprintf("tcp and (port %d or port %d or port %d)", ports["nats"], ports["clickhouse"], ports["s3"])
	path := filepath.Join(t.TempDir(), "lo.pcap")
	stopCapture := captureLoopback(t, tcpdump, path, filter)

	r := startReplay(t, "cleartext-node", "10.71.0", false, func(cfg *devSettings) { cfg.NATS.Port = int(natsPort) })
	host := "sample-web." + r.ns + ".svc.cluster.local"
	// Waiting for: the flow rows holding the marker, so it crossed the
	// ClickHouse connection.
	testenv.Eventually(t, 60*time.Second, func() error {
		var n uint64
		if err := r.ch.Conn.QueryRow(t.Context(), `SELECT count() FROM flows FINAL WHERE namespace = ? AND http_host = ?`, r.ns, host).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return errors.New("no flow row with the HTTP host yet")
		}
		return nil
	})
	inObjects := false
	for _, key := range r.keys {
		if bytes.Contains(objectBytes(t, r.bucket, key), []byte(host)) {
			inObjects = true
		}
	}
	if !inObjects {
		t.Fatalf("no object holds %q: the marker never crossed S3, so its absence below would prove nothing", host)
	}
	stopCapture()

	streams, seen := loopbackStreams(t, path, ports)
	for name, port := range ports {
		if seen[port] < 1024 {
			t.Errorf("%s (port %d): %d payload bytes captured; the capture missed the pipeline's traffic", name, port, seen[port])
		}
	}
	secrets := map[string]string{
		"the ClickHouse password":  r.cfg.ClickHouse.Password,
		"the S3 secret key":        r.cfg.S3.SecretKey,
		"the monitor's password":   r.monitor.Password,
		"the replayed HTTP Host":   host,
		"the replayed HTTP method": "GET / HTTP/1.1",
	}
	for what, secret := range secrets {
		if len(secret) < 8 {
			t.Fatalf("%s is %q: too short to look for (are the services up with deploy/dev/deps.sh up?)", what, secret)
		}
		for id, data := range streams {
			if bytes.Contains(data, []byte(secret)) {
				t.Errorf("%s is in clear text on the loopback, in %s", what, id)
			}
		}
	}
}

// freePort returns a TCP port nothing listens on now.
func freePort(t *testing.T) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

func portOf(t *testing.T, addr string) uint16 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	return uint16(n)
}

// captureLoopback runs tcpdump on lo into path until the returned stop,
// returning once tcpdump listens.
func captureLoopback(t *testing.T, tcpdump, path, filter string) (stop func()) {
	t.Helper()
	cmd := exec.Command(tcpdump, "-i", "lo", "-U", "-n", "-s", "0", "-w", path, filter)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	listening := make(chan string, 2)
	go func() {
		sc := bufio.NewScanner(stderr)
		var lines []string
		for sc.Scan() {
			lines = append(lines, sc.Text())
			if strings.Contains(sc.Text(), "listening on") {
				listening <- ""
			}
		}
		listening <- strings.Join(lines, "\n")
	}()
	select {
	case out := <-listening:
		if out != "" {
			t.Fatalf("tcpdump exited before listening: %s", out)
		}
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("tcpdump did not start listening within 30s")
	}
	done := false
	stop = func() {
		if done {
			return
		}
		done = true
		_ = cmd.Process.Signal(os.Interrupt)
		if err := cmd.Wait(); err != nil {
			t.Logf("tcpdump: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

// loopbackStreams reads a capture of lo into the payload of each TCP
// direction, in capture order (the loopback neither drops nor reorders),
// and counts the payload bytes to or from each of ports.
func loopbackStreams(t *testing.T, path string, ports map[string]uint16) (map[string][]byte, map[uint16]int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := map[uint16]bool{}
	for _, p := range ports {
		want[p] = true
	}
	streams := map[string][]byte{}
	seen := map[uint16]int{}
	eachPacket(t, path, f, func(p gopacket.Packet) {
		tcp, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if !ok || len(tcp.Payload) == 0 {
			return
		}
		src, dst := uint16(tcp.SrcPort), uint16(tcp.DstPort)
		for _, port := range []uint16{src, dst} {
			if want[port] {
				seen[port] += len(tcp.Payload)
			}
		}
		id := fmt.Sprintf("tcp %d->%d", src, dst)
		streams[id] = append(streams[id], tcp.Payload...)
	})
	return streams, seen
}
