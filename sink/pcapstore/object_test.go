package pcapstore

import (
	"net/textproto"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/capstream/capstream/sink/sinktest"
)

func TestObjectNameAndMetadata(t *testing.T) {
	h := sinktest.Header("team-a", "web.capture", "uid-1", "node-1", "web-0", "cali0")
	start := time.Date(2026, 11, 27, 10, 0, 1, 5, time.UTC).UnixNano()
	o := &object{hdr: h, name: objectName("capstream", &h, start, 17), firstSeq: 17, lastSeq: 40, firstTs: start, lastTs: start + 2e9, packets: 99, buf: newBuffer()}
	o.buf.Write([]byte("pcap"))
	o.seqs = o.seqs.add(1).add(2).add(4)
	if want := "capstream/team-a/web.capture/uid-1/node-1/web-0_cali0/20261127T100001.000000005Z-17.pcap"; o.name != want {
		t.Errorf("name %s, want %s", o.name, want)
	}
	sum := o.buf.Sum()
	// Servers hand metadata back with canonical header keys, possibly in
	// another case than sent.
	meta := map[string]string{}
	for k, v := range o.metadata(sum) {
		meta[textproto.CanonicalMIMEHeaderKey(k)] = v
	}
	got, err := rowFromMetadata(o.name, o.buf.Len(), meta)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(o.row(sum), got, cmp.AllowUnexported(indexRow{}, seqRange{})); diff != "" {
		t.Errorf("row from metadata (-want +got):\n%s", diff)
	}
	if _, err := rowFromMetadata("k", 1, map[string]string{}); err == nil {
		t.Error("empty metadata accepted")
	}
}
