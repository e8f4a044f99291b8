package schemas

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
)

func validBatchHeader() BatchHeader {
	return BatchHeader{
		Namespace:  "prod",
		Capture:    "web.capture",
		CaptureUID: "6f1e2b1c-8d0a-4a57-9a43-3c9b7d2e1f00",
		Node:       "node-1.example",
		Pod:        "web-0",
		Interface:  "cali1234567890a",
		LinkType:   LinkTypeEthernet,
		SnapLength: 65535,
		Seq:        42,
		Packets:    3,
		Producer:   "p-1736000000_01.a",
	}
}

func TestBatchHeaderEncode(t *testing.T) {
	h := validBatchHeader()
	hdr := nats.Header{}
	h.Encode(hdr)
	// The names and formats are the contract with the sinks; pin them.
	want := nats.Header{
		"Capstream-Version":     {"1"},
		"Capstream-Namespace":   {"prod"},
		"Capstream-Capture":     {"web.capture"},
		"Capstream-Capture-Uid": {"6f1e2b1c-8d0a-4a57-9a43-3c9b7d2e1f00"},
		"Capstream-Node":        {"node-1.example"},
		"Capstream-Pod":         {"web-0"},
		"Capstream-Interface":   {"cali1234567890a"},
		"Capstream-Link-Type":   {"1"},
		"Capstream-Snap-Length": {"65535"},
		"Capstream-Batch-Seq":   {"42"},
		"Capstream-Packets":     {"3"},
		"Capstream-Producer":    {"p-1736000000_01.a"},
		"Nats-Msg-Id":           {"6f1e2b1c-8d0a-4a57-9a43-3c9b7d2e1f00:node-1.example:cali1234567890a:p-1736000000_01.a:42"},
	}
	if diff := cmp.Diff(want, hdr); diff != "" {
		t.Errorf("headers (-want +got):\n%s", diff)
	}
	// Encoding over a used header replaces, never appends.
	h.Seq = 43
	h.Encode(hdr)
	if got := hdr[HeaderBatchSeq]; len(got) != 1 || got[0] != "43" {
		t.Errorf("re-encoded seq header = %q, want [43]", got)
	}
	// Last is the one optional header: set only while Last is.
	h.Last = true
	h.Encode(hdr)
	if got := hdr[HeaderLast]; len(got) != 1 || got[0] != "true" {
		t.Errorf("last header = %q, want [true]", got)
	}
	h.Last = false
	h.Encode(hdr)
	if got, ok := hdr[HeaderLast]; ok {
		t.Errorf("last header = %q after encoding a batch that is not last, want none", got)
	}
}

func TestBatchHeaderRoundTrip(t *testing.T) {
	tests := map[string]func(h *BatchHeader){
		"typical": func(*BatchHeader) {},
		"max values": func(h *BatchHeader) {
			h.Seq = math.MaxUint64
			h.LinkType = 0xffff
			h.SnapLength = MaxSnapLength
			h.Packets = MaxBatchBodyBytes / RecordHeaderLen
		},
		"min values":   func(h *BatchHeader) { h.Seq = 0; h.LinkType = 0; h.SnapLength = 1; h.Packets = 1 },
		"long names":   func(h *BatchHeader) { h.Capture = name253; h.Node = name253; h.Pod = name253 },
		"vlan iface":   func(h *BatchHeader) { h.Interface = "eth0.100" },
		"linux cooked": func(h *BatchHeader) { h.LinkType = LinkTypeLinuxSLL },
		"last":         func(h *BatchHeader) { h.Last = true },
		"last empty":   func(h *BatchHeader) { h.Last = true; h.Packets = 0 },
		"counts": func(h *BatchHeader) {
			h.Counts = RunCounts{Known: true, PacketsBefore: 4100, DroppedBatches: 3, DroppedPackets: 12}
		},
		"counts zero": func(h *BatchHeader) { h.Counts = RunCounts{Known: true} },
		"counts max": func(h *BatchHeader) {
			h.Seq = math.MaxUint64
			h.Counts = RunCounts{Known: true, PacketsBefore: math.MaxUint64, DroppedBatches: math.MaxUint64 - 1, DroppedPackets: math.MaxUint64}
		},
	}
	for name, mutate := range tests {
		t.Run(name, func(t *testing.T) {
			h := validBatchHeader()
			mutate(&h)
			hdr := nats.Header{}
			h.Encode(hdr)
			got, err := DecodeBatchHeader(hdr)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(h, got); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
		})
	}
}

// withCounts encodes the valid header (Seq 42) carrying c.
func withCounts(c RunCounts) nats.Header {
	h := validBatchHeader()
	h.Counts = c
	hdr := nats.Header{}
	h.Encode(hdr)
	return hdr
}

func TestBatchHeaderCountsOptional(t *testing.T) {
	// A batch of an older producer has no counts: it decodes with
	// Counts.Known unset; encoding without counts removes stale ones.
	hdr := withCounts(RunCounts{Known: true, PacketsBefore: 7})
	h := validBatchHeader()
	h.Encode(hdr)
	for _, k := range []string{HeaderPacketsBefore, HeaderDroppedBatches, HeaderDroppedPackets} {
		if v, ok := hdr[k]; ok {
			t.Errorf("header %s = %q after encoding without counts, want none", k, v)
		}
	}
	got, err := DecodeBatchHeader(hdr)
	if err != nil {
		t.Fatal(err)
	}
	if got.Counts.Known {
		t.Errorf("counts of a batch without them: %+v, want unknown", got.Counts)
	}
	hdr = withCounts(RunCounts{Known: true, PacketsBefore: 4100, DroppedBatches: 3, DroppedPackets: 12})
	want := map[string]string{HeaderPacketsBefore: "4100", HeaderDroppedBatches: "3", HeaderDroppedPackets: "12"}
	for k, v := range want {
		if got := hdr[k]; len(got) != 1 || got[0] != v {
			t.Errorf("header %s = %q, want [%s]", k, got, v)
		}
	}
}

func TestDecodeBatchHeaderErrors(t *testing.T) {
	encoded := func() nats.Header {
		h := validBatchHeader()
		hdr := nats.Header{}
		h.Encode(hdr)
		return hdr
	}
	// withField encodes a changed BatchHeader, so Nats-Msg-Id stays
	// consistent and the named rule is what fails; with and without edit
	// one raw header.
	withField := func(f func(h *BatchHeader)) nats.Header {
		h := validBatchHeader()
		f(&h)
		hdr := nats.Header{}
		h.Encode(hdr)
		return hdr
	}
	with := func(key, value string) nats.Header {
		hdr := encoded()
		hdr.Set(key, value)
		return hdr
	}
	without := func(key string) nats.Header {
		hdr := encoded()
		hdr.Del(key)
		return hdr
	}
	tests := map[string]struct {
		hdr  nats.Header
		want error
	}{
		"nil":                {nil, ErrMalformed},
		"no version":         {without(HeaderVersion), ErrMalformed},
		"version 2":          {with(HeaderVersion, "2"), ErrUnknownVersion},
		"version 01":         {with(HeaderVersion, "01"), ErrUnknownVersion},
		"two versions":       {func() nats.Header { h := encoded(); h.Add(HeaderVersion, "1"); return h }(), ErrMalformed},
		"lower-case name":    {func() nats.Header { h := without(HeaderPod); h["capstream-pod"] = []string{"web-0"}; return h }(), ErrMalformed},
		"no msg id":          {without(HeaderMsgID), ErrMalformed},
		"wrong msg id":       {with(HeaderMsgID, "x"), ErrMalformed},
		"seq not in msg id":  {with(HeaderBatchSeq, "43"), ErrMalformed},
		"no packets":         {without(HeaderPackets), ErrMalformed},
		"packets 0":          {withField(func(h *BatchHeader) { h.Packets = 0 }), ErrMalformed},
		"last false":         {with(HeaderLast, "false"), ErrMalformed},
		"last empty":         {with(HeaderLast, ""), ErrMalformed},
		"last twice":         {func() nats.Header { h := with(HeaderLast, "true"); h.Add(HeaderLast, "true"); return h }(), ErrMalformed},
		"packets too many":   {withField(func(h *BatchHeader) { h.Packets = MaxBatchBodyBytes/RecordHeaderLen + 1 }), ErrMalformed},
		"packets negative":   {with(HeaderPackets, "-1"), ErrMalformed},
		"packets overflow":   {with(HeaderPackets, "4294967296"), ErrMalformed},
		"packets plus":       {with(HeaderPackets, "+3"), ErrMalformed},
		"packets leading 0":  {with(HeaderPackets, "03"), ErrMalformed},
		"packets hex":        {with(HeaderPackets, "0x3"), ErrMalformed},
		"packets empty":      {with(HeaderPackets, ""), ErrMalformed},
		"seq overflow":       {with(HeaderBatchSeq, "18446744073709551616"), ErrMalformed},
		"snap 0":             {withField(func(h *BatchHeader) { h.SnapLength = 0 }), ErrMalformed},
		"snap too big":       {withField(func(h *BatchHeader) { h.SnapLength = MaxSnapLength + 1 }), ErrMalformed},
		"link type too big":  {withField(func(h *BatchHeader) { h.LinkType = 0x10000 }), ErrMalformed},
		"name underscore":    {withField(func(h *BatchHeader) { h.Capture = "a_b" }), ErrInvalidName},
		"namespace wildcard": {withField(func(h *BatchHeader) { h.Namespace = "*" }), ErrInvalidName},
		"node gt":            {withField(func(h *BatchHeader) { h.Node = "a>" }), ErrInvalidName},
		"node upper case":    {withField(func(h *BatchHeader) { h.Node = "NODE-A" }), ErrInvalidName},
		"pod double dot":     {withField(func(h *BatchHeader) { h.Pod = "a..b" }), ErrInvalidName},
		"pod space":          {withField(func(h *BatchHeader) { h.Pod = "a b" }), ErrInvalidName},
		"pod unicode":        {withField(func(h *BatchHeader) { h.Pod = "pöd" }), ErrInvalidName},
		"iface colon":        {withField(func(h *BatchHeader) { h.Interface = "eth0:1" }), ErrMalformed},
		"iface long":         {withField(func(h *BatchHeader) { h.Interface = strings.Repeat("x", 16) }), ErrMalformed},
		"uid colon":          {withField(func(h *BatchHeader) { h.CaptureUID = "a:b" }), ErrMalformed},
		"producer empty":     {withField(func(h *BatchHeader) { h.Producer = "" }), ErrMalformed},
		"producer colon":     {withField(func(h *BatchHeader) { h.Producer = "a:b" }), ErrMalformed},
		"producer long":      {withField(func(h *BatchHeader) { h.Producer = strings.Repeat("p", 65) }), ErrMalformed},
		"counts partial": {func() nats.Header {
			hdr := withCounts(RunCounts{Known: true, PacketsBefore: 10})
			hdr.Del(HeaderDroppedPackets)
			return hdr
		}(), ErrMalformed},
		"counts not decimal": {func() nats.Header { h := withCounts(RunCounts{Known: true}); h.Set(HeaderPacketsBefore, "x"); return h }(), ErrMalformed},
		"counts twice": {func() nats.Header {
			h := withCounts(RunCounts{Known: true})
			h.Add(HeaderDroppedBatches, "0")
			return h
		}(), ErrMalformed},
		"dropped batches at seq": {withCounts(RunCounts{Known: true, PacketsBefore: 100, DroppedBatches: 42}), ErrMalformed},
		"dropped above before":   {withCounts(RunCounts{Known: true, PacketsBefore: 10, DroppedBatches: 1, DroppedPackets: 11}), ErrMalformed},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := DecodeBatchHeader(tc.hdr)
			if !errors.Is(err, tc.want) {
				t.Fatalf("DecodeBatchHeader = %+v, %v; want %v", got, err, tc.want)
			}
			if diff := cmp.Diff(BatchHeader{}, got); diff != "" {
				t.Errorf("DecodeBatchHeader returned a value with its error:\n%s", diff)
			}
		})
	}
}

func TestMsgID(t *testing.T) {
	base := validBatchHeader()
	seen := map[string]string{base.MsgID(): "base"}
	variants := map[string]func(h *BatchHeader){
		"uid":       func(h *BatchHeader) { h.CaptureUID = "other" },
		"node":      func(h *BatchHeader) { h.Node = "node-2" },
		"interface": func(h *BatchHeader) { h.Interface = "cali0000000000b" },
		"producer":  func(h *BatchHeader) { h.Producer = "p-2" },
		"seq":       func(h *BatchHeader) { h.Seq++ },
	}
	for name, mutate := range variants {
		h := base
		mutate(&h)
		id := h.MsgID()
		if prev, ok := seen[id]; ok {
			t.Errorf("variant %s has the same message ID as %s: %s", name, prev, id)
		}
		seen[id] = name
	}
	// Fields that do not identify the batch must not change the ID, or a
	// retried publish would not be de-duplicated.
	h := base
	h.Packets, h.SnapLength, h.Pod = 99, 100, "other-pod"
	if diff := cmp.Diff(base.MsgID(), h.MsgID()); diff != "" {
		t.Errorf("message ID depends on non-identifying fields (-want +got):\n%s", diff)
	}
}

func FuzzDecodeBatchHeader(f *testing.F) {
	h := validBatchHeader()
	f.Add("1", h.Namespace, h.Capture, h.CaptureUID, h.Node, h.Pod, h.Interface, "1", "65535", "42", "3", h.Producer, h.MsgID(), "")
	f.Add("1", h.Namespace, h.Capture, h.CaptureUID, h.Node, h.Pod, h.Interface, "1", "65535", "42", "0", h.Producer, h.MsgID(), "true")
	f.Add("2", "a_b", "*", "", ">", " ", "a:b", "-1", "0", "018", "x", "", "", "yes")
	keys := []string{
		HeaderVersion, HeaderNamespace, HeaderCapture, HeaderCaptureUID, HeaderNode, HeaderPod, HeaderInterface,
		HeaderLinkType, HeaderSnapLength, HeaderBatchSeq, HeaderPackets, HeaderProducer, HeaderMsgID, HeaderLast,
	}
	f.Fuzz(func(t *testing.T, version, ns, capture, uid, node, pod, iface, linkType, snapLen, seq, packets, producer, msgID, last string) {
		hdr := nats.Header{}
		for i, v := range []string{version, ns, capture, uid, node, pod, iface, linkType, snapLen, seq, packets, producer, msgID} {
			hdr.Set(keys[i], v)
		}
		if last != "" { // absent, or present with a fuzzed value
			hdr.Set(HeaderLast, last)
		}
		h, err := DecodeBatchHeader(hdr)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnknownVersion) {
				t.Fatalf("error %v wraps neither ErrMalformed nor ErrUnknownVersion", err)
			}
			return
		}
		// Only what Encode writes is accepted.
		again := nats.Header{}
		h.Encode(again)
		if diff := cmp.Diff(hdr, again); diff != "" {
			t.Fatalf("accepted headers that Encode writes differently (-accepted +encoded):\n%s", diff)
		}
	})
}

// mixedBatch returns a body of about size bytes with a realistic mix of
func BenchmarkBatchHeader(b *testing.B) {
	h := validBatchHeader()
	hdr := nats.Header{}
	b.Run("encode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			h.Seq++
			h.Encode(hdr)
		}
	})
	h.Encode(hdr)
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := DecodeBatchHeader(hdr); err != nil {
				b.Fatal(err)
			}
		}
	})
}
