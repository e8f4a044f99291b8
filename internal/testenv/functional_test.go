package testenv

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/capstream/capstream/schemas"
)

// TestS3RoundTrip puts a small object and a multipart object on the real S3
// server with minio-go and reads both back byte for byte.
func TestS3RoundTrip(t *testing.T) {
	b := S3(t)
	for name, size := range map[string]int{"small.pcap": 1000, "multipart.pcap": 12 << 20} {
		t.Run(name, func(t *testing.T) {
			data := make([]byte, size)
			if _, err := rand.Read(data); err != nil {
				t.Fatal(err)
			}
			_, err := b.Client.PutObject(t.Context(), b.Bucket, "ns/capture/"+name, bytes.NewReader(data), -1,
				minio.PutObjectOptions{PartSize: 5 << 20, UserMetadata: map[string]string{"Capture": "ns/capture"}})
			if err != nil {
				t.Fatalf("put: %v", err)
			}
			obj, err := b.Client.GetObject(t.Context(), b.Bucket, "ns/capture/"+name, minio.GetObjectOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer obj.Close()
			got, err := io.ReadAll(obj)
			if err != nil {
				t.Fatalf("get: %v", err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("read back %d bytes, differ from the %d written", len(got), len(data))
			}
			info, err := b.Client.StatObject(t.Context(), b.Bucket, "ns/capture/"+name, minio.StatObjectOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if info.UserMetadata["Capture"] != "ns/capture" {
				t.Errorf("user metadata = %v", info.UserMetadata)
			}
		})
	}
}

// TestJetStreamWithSchemaStreams publishes and consumes on the embedded
// server with the stream and consumer configs from schemas.
func TestJetStreamWithSchemaStreams(t *testing.T) {
	s := NATS(t)
	ctx := t.Context()
	if err := schemas.EnsureStreams(ctx, s.JS, schemas.DefaultPacketsStreamLimits()); err != nil {
		t.Fatal(err)
	}
	cons, err := s.JS.CreateOrUpdateConsumer(ctx, schemas.StreamPackets, schemas.PcapSinkConsumer())
	if err != nil {
		t.Fatal(err)
	}
	subj, err := schemas.PacketSubject("sample-namespace", "sample-capture", "node.a")
	if err != nil {
		t.Fatal(err)
	}
	h := schemas.BatchHeader{Namespace: "sample-namespace", Capture: "sample-capture", CaptureUID: "0b6c2d4e-uid",
		Node: "node.a", Pod: "pod-a", Interface: "cali0123456789a", LinkType: schemas.LinkTypeEthernet,
		SnapLength: schemas.MaxSnapLength, Seq: 1, Packets: 1, Producer: "p1"}
	body := schemas.AppendRecord(nil, time.Unix(1700000000, 123456789), []byte("frame bytes"), 11)
	msg := nats.NewMsg(subj)
	h.Encode(msg.Header)
	msg.Data = body
	for range 2 { // the second is a retry with the same Nats-Msg-Id
		if _, err := s.JS.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	batch, err := cons.Fetch(10, jetstream.FetchMaxWait(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var got []jetstream.Msg
	for m := range batch.Messages() {
		got = append(got, m)
	}
	if len(got) != 1 {
		t.Fatalf("consumed %d messages, want 1 (the retry is a duplicate)", len(got))
	}
	gh, err := schemas.DecodeBatchHeader(got[0].Headers())
	if err != nil {
		t.Fatal(err)
	}
	// The stream stores the subject with its partition appended.
	part, ok := strings.CutPrefix(got[0].Subject(), subj+".")
	if gh != h || !bytes.Equal(got[0].Data(), body) || !ok || part == "" || strings.Trim(part, "0123456789") != "" {
		t.Errorf("consumed %s %+v %x", got[0].Subject(), gh, got[0].Data())
	}
	if err := got[0].Ack(); err != nil {
		t.Fatal(err)
	}
}

// TestNATSRestart stops and starts the embedded server; the client
// reconnects and the stream survives.
func TestNATSRestart(t *testing.T) {
	s := NATS(t)
	if err := schemas.EnsureStreams(t.Context(), s.JS, schemas.DefaultPacketsStreamLimits()); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	Eventually(t, 10*time.Second, func() error {
		_, err := s.JS.Stream(t.Context(), schemas.StreamCommands)
		return err
	})
}

// TestNetNode wires two pods to a node and sends UDP between them over
// IPv4 and IPv6, through the Calico-style veths and the node's routes.
func TestNetNode(t *testing.T) {
	n := NetNode(t, Pod{"sample-namespace", "pod-a"}, Pod{"sample-namespace", "pod-b"})
	a, b := n.Pods[0], n.Pods[1]
	if a.HostIface != CalicoInterfaceName("cali", "sample-namespace", "pod-a") || len(a.HostIface) != 15 {
		t.Errorf("host interface %q", a.HostIface)
	}
	if out := n.Exec(t, "ip", "-o", "link", "show", a.HostIface); !strings.Contains(out, "ee:ee:ee:ee:ee:ee") {
		t.Errorf("node side of pod-a: %s", out)
	}
	for _, family := range []struct {
		network string
		dst     net.IP
	}{{"udp4", b.IPv4}, {"udp6", b.IPv6}} {
		t.Run(family.network, func(t *testing.T) {
			var conn net.PacketConn
			if err := b.Do(func() error {
				var err error
				conn, err = net.ListenPacket(family.network, net.JoinHostPort(family.dst.String(), "9999"))
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			want := []byte("hello from pod-a over " + family.network)
			if err := a.Do(func() error {
				c, err := net.Dial(family.network, net.JoinHostPort(family.dst.String(), "9999"))
				if err != nil {
					return err
				}
				defer c.Close()
				// Neighbour discovery may eat the first datagrams.
				for range 20 {
					if _, err := c.Write(want); err != nil {
						return err
					}
					time.Sleep(20 * time.Millisecond)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 1500)
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			nr, from, err := conn.ReadFrom(buf)
			if err != nil {
				t.Fatalf("pod-b received nothing: %v", err)
			}
			if !bytes.Equal(buf[:nr], want) {
				t.Errorf("pod-b received %q", buf[:nr])
			}
			if ip := from.(*net.UDPAddr).IP; !ip.Equal(a.IPv4) && !ip.Equal(a.IPv6) {
				t.Errorf("datagram from %s, want pod-a", ip)
			}
		})
	}
}

// TestNetNodeCleanup checks the namespaces go away with the test.
func TestNetNodeCleanup(t *testing.T) {
	var names []string
	t.Run("build", func(t *testing.T) {
		n := NetNode(t, Pod{"ns", "p"})
		names = []string{n.NetNS, n.Pods[0].NetNS}
	})
	out := run(t, "ip", "netns", "list")
	for _, name := range names {
		if strings.Contains(out, name) {
			t.Errorf("namespace %s left behind: %s", name, out)
		}
	}
}

func TestKubeNamespace(t *testing.T) {
	k := Kube(t)
	ns := k.Namespace(t, map[string]string{"team": "a"})
	got, err := k.Client.CoreV1().Namespaces().Get(t.Context(), ns, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Labels["team"] != "a" {
		t.Errorf("labels = %v", got.Labels)
	}
}

func TestEnvFile(t *testing.T) {
	m := readEnvFile("testdata/nonexistent")
	if len(m) != 0 {
		t.Errorf("missing file gave %v", m)
	}
	dir := t.TempDir()
	p := dir + "/env"
	if err := os.WriteFile(p, []byte("# comment\nA=1\n\nB=x=y\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m = readEnvFile(p)
	if m["A"] != "1" || m["B"] != "x=y" || len(m) != 2 {
		t.Errorf("env file parsed as %v", m)
	}
}
