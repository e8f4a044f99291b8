package pcapstore

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/capstream/capstream/schemas"
	"github.com/capstream/capstream/sink/sinktest"
)

// A 253-byte pod name (the most Kubernetes allows) makes "<pod>_<iface>"
// longer than a file name may be; the object still lands, under a
// shortened segment, with the full names in its metadata and its row.
func TestFunctionalPcapLongPodName(t *testing.T) {
	e := setup(t)
	label := strings.Repeat("p", 63)
	pod := label + "." + label + "." + label + "." + label[:61] // 253 bytes
	h := sinktest.Header("team-a", "web.capture", "0b1c2d3e-uid", "node-1", pod, "cali1234567890a")
	g := sinktest.Mixed(time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC), 2, 5000)
	in, _ := sinktest.TrafficOf(t, g.Pkts)
	batches := sinktest.EndRun(sinktest.Batches(h, g.Pkts, 64<<10), false)
	cfg := e.config()
	cfg.MaxObjectBytes = 16 << 20
	key, _ := oneObject(t, e, cfg, in, batches, 30*time.Second)
	for _, seg := range strings.Split(key, "/") {
		if len(seg) > schemas.MaxKeySegment {
			t.Errorf("key segment of %d bytes: %s", len(seg), seg)
		}
	}
	if !strings.Contains(key, "/"+schemas.KeySegment(pod+"_cali1234567890a")+"/") {
		t.Errorf("key %s lacks the shortened pod segment", key)
	}
	if got := e.stat(t, key).UserMetadata["Capstream-Pod"]; got != pod {
		t.Errorf("pod metadata %q, want the full name", got)
	}
	var rowPod string
	if err := e.DB.Conn.QueryRow(t.Context(), "SELECT pod FROM pcap_objects FINAL WHERE key = ?", key).Scan(&rowPod); err != nil {
		t.Fatal(err)
	}
	if rowPod != pod {
		t.Errorf("pcap_objects pod %q, want the full name", rowPod)
	}
}

// A capture deleted and re-created under the same name has a new UID, and
// the same producer may number its batches from 1 again. Each capture's
// objects land under its own UID's directory, hold its packets only, and
// the status report of the new one points at its own directory.
func TestFunctionalPcapKeysByUID(t *testing.T) {
	e := setup(t)
	const oldUID, newUID = "0b1c2d3e-old", "9f8e7d6c-new"
	cfg := e.config()
	cfg.MaxObjectBytes = 16 << 20
	start(t, e, cfg)
	inputs := map[string]string{}
	for i, uid := range []string{oldUID, newUID} {
		h := sinktest.Header("team-a", "web.capture", uid, "node-1", "web-0", "cali1234567890a")
		g := sinktest.Mixed(time.Date(2026, 11, 27, 10, i, 0, 0, time.UTC), 2, 2000)
		in, _ := sinktest.TrafficOf(t, g.Pkts)
		inputs[uid] = in
		if err := sinktest.Publish(t.Context(), e.NATS.JS, sinktest.EndRun(sinktest.Batches(h, g.Pkts, 16<<10), false)); err != nil {
			t.Fatal(err)
		}
		waitDrained(t, e, 30*time.Second)
	}
	keys, paths := e.download(t)
	byUID := map[string][]string{}
	for i, k := range keys {
		rest, ok := strings.CutPrefix(k, schemas.CaptureDir("pcaps", "team-a", "web.capture", ""))
		uid, _, _ := strings.Cut(rest, "/")
		if !ok || !strings.HasPrefix(k, schemas.CaptureDir("pcaps", "team-a", "web.capture", uid)+"node-1/web-0_cali1234567890a/") {
			t.Errorf("key %s does not follow <prefix>/<ns>/<capture>/<uid>/<node>/<pod>_<iface>/", k)
		}
		if got := e.stat(t, k).UserMetadata["Capstream-Capture-Uid"]; got != uid {
			t.Errorf("%s: uid metadata %q, key says %q", k, got, uid)
		}
		byUID[uid] = append(byUID[uid], paths[i])
	}
	if len(byUID) != 2 {
		t.Fatalf("objects under %d UIDs (%v), want 2", len(byUID), keys)
	}
	for uid, in := range inputs {
		if diff := cmp.Diff(sinktest.Packets(t, in), sinktest.Packets(t, byUID[uid]...)); diff != "" {
			t.Errorf("packets of %s (-input +objects):\n%s", uid, diff)
		}
	}
	st := lastReport(t, e)
	if want := "s3://" + e.s3.Bucket + "/pcaps/team-a/web.capture/" + newUID + "/node-1/"; st.UID != newUID || st.Directory != want || len(st.Objects) != len(byUID[newUID]) {
		t.Errorf("last status: uid %s directory %s, %d objects; want %s, %s, %d", st.UID, st.Directory, len(st.Objects), newUID, want, len(byUID[newUID]))
	}
}
