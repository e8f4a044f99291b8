package main

// The end-to-end tests' harness: a dev configuration on the test's
// services, starting and stopping the pipeline, the replayed workload, and
// what the tests read back (objects, ports, status).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"github.com/minio/minio-go/v7"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/capstream/capstream/internal/clients"
	"github.com/capstream/capstream/internal/netsim"
	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/pipeline"
	"github.com/capstream/capstream/producer"
	"github.com/capstream/capstream/schemas"
	v3 "github.com/capstream/capstream/schemas/v3"
	"github.com/capstream/capstream/sink/sinktest"
)

// devTestSettings is a dev configuration on the test's services, with
// short rotation and timeouts so results show within seconds.
func devTestSettings(t *testing.T, ch *testenv.ClickHouseDB, bucket *testenv.S3Bucket, k *testenv.KubeEnv, ns, node string) *devSettings {
	cfg := defaultDevSettings()
	cfg.Log.Level = "warn"
	files := testenv.TLS(t)
	cfg.NATS.TLS = pipeline.ServerTLS{CertFile: files.ServerCert, KeyFile: files.ServerKey, CAFile: files.CA}
	cfg.Access.CertFile, cfg.Access.KeyFile = files.ServerCert, files.ServerKey
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Kube.Kubeconfig = k.Kubeconfig
	cfg.ClickHouse = ch.SecureConfig(t) // over TLS, as a deployment should
	cfg.S3 = bucket.Config()
	cfg.CreateStorage = false
	cfg.Nodes = []string{node}
	cfg.Router.Namespace = ns
	cfg.Pcap.MaxObjectAge, cfg.Pcap.StopAfter = 2*time.Second, 2*time.Second
	cfg.Flows.ActiveTimeout, cfg.Flows.IdleTimeout, cfg.Flows.StopAfter = 4*time.Second, 2*time.Second, 4*time.Second
	return cfg
}

// startDev runs runDev until the returned stop is called (or the test
// ends), which cancels it and checks that it returns nil in time. It
// returns once the pipeline is built, with how the monitor identity
// reaches its NATS server.
func startDev(t *testing.T, cfg *devSettings, started func(*netsim.Simulator)) (stop func(), monitor clients.NATSConfig) {
	t.Helper()
	// As config.Load would: Validate also copies the shared S3 section.
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	up := make(chan clients.NATSConfig, 1)
	r := testenv.Start(t, "capstream-dev", func(ctx context.Context) error {
		return runDev(ctx, cfg, &devHooks{started: func(p *pipeline.Pipeline, s *netsim.Simulator) {
			if started != nil {
				started(s)
			}
			mon, err := p.Client(schemas.UserMonitor)
			if err != nil {
				t.Error(err)
			}
			up <- mon
		}})
	})
	select {
	case monitor = <-up:
	case <-r.Done():
		t.Fatalf("runDev ended before starting: %v", r.Err())
	case <-time.After(time.Minute):
		t.Fatal("runDev did not start within 1m")
	}
	return func() {
		t.Helper()
		if err := r.Stop(); err != nil {
			t.Errorf("runDev: %v", err)
		}
	}, monitor
}

// natsArgs are the nats CLI's flags to connect as c.
func natsArgs(c clients.NATSConfig) []string {
	return []string{"--server", c.URL, "--tlsca", c.TLS.CAFile, "--user", c.User, "--password", c.Password, "--inbox-prefix", c.InboxPrefix}
}

// applySample creates the seed's sample capture in ns and returns its
// UID, which the pcap objects' keys hold.
func applySample(t *testing.T, k *testenv.KubeEnv, ns string) string {
	t.Helper()
	return string(k.CreateCapture(t, ns, "sample-capture", `k8s-app == "sample-app"`).GetUID())
}

// waitObjects waits for completed pcap objects under prefix for both
// selected pods, and none for the unselected one, and returns their keys.
func waitObjects(t *testing.T, bucket *testenv.S3Bucket, prefix string) []string {
	t.Helper()
	var keys []string
	// Waiting for: pcap objects of both selected pods.
	testenv.Eventually(t, 90*time.Second, func() error {
		keys = keys[:0]
		pods := map[string]bool{}
		for o := range bucket.Client.ListObjects(t.Context(), bucket.Bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
			if o.Err != nil {
				return o.Err
			}
			keys = append(keys, o.Key)
			pods[strings.SplitN(strings.TrimPrefix(o.Key, prefix), "_", 2)[0]] = true
		}
		if !pods["sample-web"] || !pods["sample-client"] {
			return fmt.Errorf("objects %v", keys)
		}
		if pods["other-client"] {
			return fmt.Errorf("other-client was captured: %v", keys)
		}
		return nil
	})
	return keys
}

// objectBytes is the content of an object in b.
func objectBytes(t *testing.T, b *testenv.S3Bucket, key string) []byte {
	t.Helper()
	obj, err := b.Client.GetObject(t.Context(), b.Bucket, key, minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	data, err := io.ReadAll(obj)
	if err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	return data
}

// countPorts adds the TCP and UDP ports of every packet in a pcap object
// to ports, checking on the way that the object is a readable pcap.
func countPorts(t *testing.T, b *testenv.S3Bucket, key string, ports map[uint16]int) int {
	t.Helper()
	n := eachPacket(t, "object "+key, bytes.NewReader(objectBytes(t, b, key)), func(p gopacket.Packet) {
		if tcp, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP); ok {
			ports[uint16(tcp.SrcPort)]++
			ports[uint16(tcp.DstPort)]++
		}
		if udp, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP); ok {
			ports[uint16(udp.SrcPort)]++
			ports[uint16(udp.DstPort)]++
		}
	})
	if n == 0 {
		t.Errorf("object %s holds no packets", key)
	}
	return n
}

// eachPacket reads the pcap in in (name says which, in failures), hands
// each packet, decoded, to fn and returns how many there were.
func eachPacket(t *testing.T, name string, in io.Reader, fn func(gopacket.Packet)) int {
	t.Helper()
	r, err := pcapgo.NewReader(in)
	if err != nil {
		t.Fatalf("%s is not a pcap: %v", name, err)
	}
	n := 0
	for {
		data, _, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			return n
		}
		if err != nil {
			t.Fatalf("read %s: %v", name, err)
		}
		n++
		fn(gopacket.NewPacket(data, r.LinkType(), gopacket.DecodeOptions{Lazy: true, NoCopy: true}))
	}
}

// replay is a running dev pipeline that replays a generated pcap (one
// HTTP exchange and one DNS lookup) on every selected interface, with the
// sample capture applied.
type replay struct {
	ch      *testenv.ClickHouseDB
	bucket  *testenv.S3Bucket
	k       *testenv.KubeEnv
	ns      string
	node    string
	cfg     *devSettings
	packets int                // in the replayed pcap
	monitor clients.NATSConfig // the monitor identity on the embedded server
	keys    []string
}

// startReplay creates the sample pods on node with addresses net.2 and up
// (and a third, unselected pod when other is set), runs the pipeline with
// the file source (its settings changed by each of opts), applies the
// sample capture and waits for its first objects.
func startReplay(t *testing.T, node, net string, other bool, opts ...func(*devSettings)) *replay {
	t.Helper()
	r := &replay{ch: testenv.ClickHouse(t), bucket: testenv.S3(t), k: testenv.Kube(t), node: node}
	r.ns = r.k.Namespace(t, nil)
	path := filepath.Join(t.TempDir(), "replay.pcap")
	r.packets = writeReplayPcap(t, path, "sample-web."+r.ns+".svc.cluster.local")
	pods := []struct{ name, app string }{{"sample-web", "sample-app"}, {"sample-client", "sample-app"}}
	if other {
		pods = append(pods, struct{ name, app string }{"other-client", "other-app"})
	}
	for i, p := range pods {
		createRunningPod(t, r.k, r.ns, p.name, map[string]string{"k8s-app": p.app}, node, fmt.Sprintf("%s.%d", net, i+2))
	}
	r.cfg = devTestSettings(t, r.ch, r.bucket, r.k, r.ns, node)
	r.cfg.Producer.Source = producer.SourceFile
	r.cfg.Producer.File.Default = path
	for _, o := range opts {
		o(r.cfg)
	}
	_, r.monitor = startDev(t, r.cfg, nil)
	uid := applySample(t, r.k, r.ns)
	r.keys = waitObjects(t, r.bucket, schemas.CaptureDir(r.cfg.Pcap.Prefix, r.ns, "sample-capture", uid)+node+"/")
	return r
}

// captureStatus reads the sample capture's status.
func captureStatus(t *testing.T, k *testenv.KubeEnv, ns string) (v3.PacketCaptureStatus, error) {
	obj, err := k.Dynamic.Resource(v3.Resource).Namespace(ns).Get(t.Context(), "sample-capture", metav1.GetOptions{})
	if err != nil {
		return v3.PacketCaptureStatus{}, err
	}
	var got v3.PacketCapture
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, &got); err != nil {
		return v3.PacketCaptureStatus{}, err
	}
	return got.Status, nil
}

// createRunningPod creates a pod on node and marks it Running with ip, as
// a kubelet would.
func createRunningPod(t *testing.T, k *testenv.KubeEnv, ns, name string, labels map[string]string, node, ip string) {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}}},
	}
	created, err := k.Client.CoreV1().Pods(ns).Create(t.Context(), pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	created.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}
	if _, err := k.Client.CoreV1().Pods(ns).UpdateStatus(t.Context(), created, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// writeReplayPcap writes one HTTP exchange (handshake, request with Host,
// response, FIN both ways) and one DNS lookup for host between two pod
// addresses, stamped from a second ago, and returns the number of packets.
func writeReplayPcap(t *testing.T, path, host string) int {
	t.Helper()
	client, server := net.IPv4(10, 70, 0, 3), net.IPv4(10, 70, 0, 2)
	g := sinktest.NewGen(time.Now().Add(-time.Second), time.Millisecond)
	req := []byte("GET / HTTP/1.1\r\nHost: " + host + "\r\nUser-Agent: test\r\n\r\n")
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
	g.Conn(client, server, 40000, 80, req, resp, 1460)
	g.DNS(client, server, 45000, host, layers.DNSResponseCodeNoErr)
	if err := sinktest.WritePcap(path, g.Pkts); err != nil {
		t.Fatal(err)
	}
	return len(g.Pkts)
}
