package schemas

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

type testRecord struct {
	TS      time.Time
	Data    []byte
	OrigLen int
}

func testRecords() []testRecord {
	return []testRecord{
		{time.Date(2025, 1, 2, 3, 4, 5, 123456789, time.UTC), bytes.Repeat([]byte{0xaa}, 60), 60},
		{time.Date(2025, 1, 2, 3, 4, 5, 999999999, time.UTC), []byte{}, 0},
		{time.Date(2025, 1, 2, 3, 4, 6, 1, time.UTC), bytes.Repeat([]byte{1, 2, 3}, 500), 9000},
		{time.Unix(0, 0).UTC(), []byte{0xff}, 1},
		{time.Unix(math.MaxUint32, 999999999).UTC(), bytes.Repeat([]byte{7}, MaxSnapLength), MaxSnapLength},
	}
}

func TestRecordsRoundTrip(t *testing.T) {
	var body []byte
	for _, r := range testRecords() {
		body = AppendRecord(body, r.TS, r.Data, r.OrigLen)
	}
	var got []testRecord
	rr := NewRecordReader(body, 0)
	for {
		rec, err := rr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if int(rec.CapLen) != len(rec.Data) {
			t.Errorf("CapLen %d, len(Data) %d", rec.CapLen, len(rec.Data))
		}
		got = append(got, testRecord{rec.Timestamp(), rec.Data, int(rec.OrigLen)})
	}
	if diff := cmp.Diff(testRecords(), got); diff != "" {
		t.Errorf("records (-want +got):\n%s", diff)
	}
	if _, err := rr.Next(); !errors.Is(err, io.EOF) {
		t.Errorf("Next after EOF: %v, want io.EOF", err)
	}
	n, err := ValidateBody(body, 0)
	if err != nil || n != len(testRecords()) {
		t.Errorf("ValidateBody = %d, %v; want %d, nil", n, err, len(testRecords()))
	}
	// A snap length below the largest record rejects the body.
	if _, err := ValidateBody(body, 65535); !errors.Is(err, ErrMalformed) {
		t.Errorf("ValidateBody with a small snap length: %v, want ErrMalformed", err)
	}
}

func TestRecordDataIsBounded(t *testing.T) {
	body := AppendRecord(nil, time.Unix(1, 0), []byte{1, 2}, 2)
	body = AppendRecord(body, time.Unix(2, 0), []byte{3, 4}, 2)
	rr := NewRecordReader(body, 0)
	rec, err := rr.Next()
	if err != nil {
		t.Fatal(err)
	}
	_ = append(rec.Data, 9, 9, 9) // must not overwrite the next record
	rec, err = rr.Next()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]byte{3, 4}, rec.Data); diff != "" {
		t.Errorf("second record (-want +got):\n%s", diff)
	}
}

func TestAppendRecordClamps(t *testing.T) {
	tests := map[string]struct {
		ts           time.Time
		data         []byte
		origLen      int
		sec, nsec    uint32
		capLen, orig uint32
	}{
		"orig below data": {time.Unix(5, 6), []byte{1, 2, 3}, 1, 5, 6, 3, 3},
		"before 1970":     {time.Unix(-10, 5), nil, 0, 0, 0, 0, 0},
		"after 2106":      {time.Unix(math.MaxUint32+1, 0), nil, 0, math.MaxUint32, 999999999, 0, 0},
		"huge orig":       {time.Unix(1, 0), nil, math.MaxInt, 1, 0, 0, math.MaxUint32},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			rr := NewRecordReader(AppendRecord(nil, tc.ts, tc.data, tc.origLen), 0)
			rec, err := rr.Next()
			if err != nil {
				t.Fatal(err)
			}
			type fields struct{ Sec, Nsec, CapLen, OrigLen uint32 }
			want := fields{tc.sec, tc.nsec, tc.capLen, tc.orig}
			if diff := cmp.Diff(want, fields{rec.Sec, rec.Nsec, rec.CapLen, rec.OrigLen}); diff != "" {
				t.Errorf("record (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAppendRecordAllocs(t *testing.T) {
	data := make([]byte, 1500)
	dst := make([]byte, 0, 64<<10)
	ts := time.Now()
	allocs := testing.AllocsPerRun(100, func() {
		dst = AppendRecord(dst[:0], ts, data, 1500)
	})
	if allocs != 0 {
		t.Errorf("AppendRecord with capacity: %v allocations, want 0", allocs)
	}
	body := dst
	var rr RecordReader
	allocs = testing.AllocsPerRun(100, func() {
		rr.Reset(body, 0)
		for {
			if _, err := rr.Next(); err != nil {
				break
			}
		}
	})
	if allocs != 0 {
		t.Errorf("RecordReader: %v allocations, want 0", allocs)
	}
}

// rawRecord builds a record header by hand, to write what AppendRecord
// refuses to.
func rawRecord(sec, nsec, capLen, origLen uint32, data []byte) []byte {
	b := make([]byte, 0, RecordHeaderLen+len(data))
	for _, v := range []uint32{sec, nsec, capLen, origLen} {
		b = append(b, byte(v), byte(v>>8), byte(v>>16), byte(v>>24))
	}
	return append(b, data...)
}

func TestRecordReaderErrors(t *testing.T) {
	good := AppendRecord(nil, time.Unix(1, 0), []byte{1, 2, 3, 4}, 4)
	tests := map[string]struct {
		body    []byte
		snapLen uint32
		want    error // checked with errors.Is, besides ErrMalformed
		records int   // good records before the error
	}{
		"short header":      {good[:RecordHeaderLen-1], 0, ErrTruncated, 0},
		"short data":        {good[:len(good)-1], 0, ErrTruncated, 0},
		"second truncated":  {append(append([]byte{}, good...), good[:5]...), 0, ErrTruncated, 1},
		"huge caplen":       {rawRecord(1, 0, math.MaxUint32, math.MaxUint32, nil), 0, ErrMalformed, 0},
		"caplen above orig": {rawRecord(1, 0, 4, 3, []byte{1, 2, 3, 4}), 0, ErrMalformed, 0},
		"caplen above snap": {rawRecord(1, 0, 4, 4, []byte{1, 2, 3, 4}), 3, ErrMalformed, 0},
		"caplen above max":  {rawRecord(1, 0, MaxSnapLength+1, MaxSnapLength+1, make([]byte, MaxSnapLength+1)), 0, ErrMalformed, 0},
		"snap above max":    {rawRecord(1, 0, MaxSnapLength+1, MaxSnapLength+1, make([]byte, MaxSnapLength+1)), math.MaxUint32, ErrMalformed, 0},
		"nanoseconds 1e9":   {rawRecord(1, 1e9, 0, 0, nil), 0, ErrMalformed, 0},
		"trailing garbage":  {append(append([]byte{}, good...), 0), 0, ErrTruncated, 1},
		"second caplen":     {append(append([]byte{}, good...), rawRecord(1, 0, 5, 4, make([]byte, 5))...), 0, ErrMalformed, 1},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			n, err := ValidateBody(tc.body, tc.snapLen)
			if !errors.Is(err, ErrMalformed) || !errors.Is(err, tc.want) {
				t.Fatalf("ValidateBody = %d, %v; want %v", n, err, tc.want)
			}
			if n != tc.records {
				t.Errorf("ValidateBody read %d good records, want %d", n, tc.records)
			}
			rr := NewRecordReader(tc.body, tc.snapLen)
			for range tc.records {
				if _, err := rr.Next(); err != nil {
					t.Fatal(err)
				}
			}
			_, err1 := rr.Next()
			_, err2 := rr.Next()
			if err1 == nil || err1 != err2 {
				t.Errorf("errors not sticky: %v then %v", err1, err2)
			}
		})
	}
	if n, err := ValidateBody(nil, 0); n != 0 || err != nil {
		t.Errorf("ValidateBody(nil) = %d, %v; want 0, nil", n, err)
	}
	var zero RecordReader
	if _, err := zero.Next(); !errors.Is(err, io.EOF) {
		t.Errorf("zero RecordReader: %v, want io.EOF", err)
	}
}

func TestPcapHeader(t *testing.T) {
	got := AppendPcapHeader([]byte{0xee}, LinkTypeEthernet, 65535)
	want := []byte{
		0xee,
		0x4d, 0x3c, 0xb2, 0xa1, // magic, nanosecond resolution
		2, 0, 4, 0, // version 2.4
		0, 0, 0, 0, // thiszone
		0, 0, 0, 0, // sigfigs
		0xff, 0xff, 0, 0, // snaplen
		1, 0, 0, 0, // network
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("header (-want +got):\n%s", diff)
	}
	if len(got)-1 != PcapHeaderLen {
		t.Errorf("header is %d bytes, PcapHeaderLen is %d", len(got)-1, PcapHeaderLen)
	}
}

// TestPcapgoReadsBatches checks what the pcap sink writes, one global
// header followed by batch bodies as they are, is a pcap file that
// gopacket (and hence Wireshark and tcpdump) reads with nanosecond
// timestamps.
func TestPcapgoReadsBatches(t *testing.T) {
	const snapLen = MaxSnapLength
	file := AppendPcapHeader(nil, LinkTypeEthernet, snapLen)
	recs := testRecords()
	// Two batches, appended back to back.
	var b1, b2 []byte
	for i, r := range recs {
		if i < 2 {
			b1 = AppendRecord(b1, r.TS, r.Data, r.OrigLen)
		} else {
			b2 = AppendRecord(b2, r.TS, r.Data, r.OrigLen)
		}
	}
	file = append(append(file, b1...), b2...)
	r, err := pcapgo.NewReader(bytes.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	if r.LinkType() != layers.LinkTypeEthernet || r.Snaplen() != snapLen {
		t.Errorf("link type %v, snap length %d; want Ethernet, %d", r.LinkType(), r.Snaplen(), snapLen)
	}
	var got []testRecord
	for {
		data, ci, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if ci.CaptureLength != len(data) {
			t.Errorf("capture length %d, data %d bytes", ci.CaptureLength, len(data))
		}
		got = append(got, testRecord{ci.Timestamp.UTC(), data, ci.Length})
	}
	if diff := cmp.Diff(recs, got); diff != "" {
		t.Errorf("pcapgo read (-want +got):\n%s", diff)
	}
}

func FuzzRecordReader(f *testing.F) {
	var body []byte
	for _, r := range testRecords()[:4] {
		body = AppendRecord(body, r.TS, r.Data, r.OrigLen)
	}
	f.Add(body, uint32(0))
	f.Add(body, uint32(60))
	f.Add(body[:len(body)-1], uint32(1500))
	f.Add(rawRecord(1, 0, 100, 50, make([]byte, 100)), uint32(0))
	f.Add([]byte{}, uint32(1))
	f.Fuzz(func(t *testing.T, body []byte, snapLen uint32) {
		rr := NewRecordReader(body, snapLen)
		var reenc []byte
		n := 0
		for {
			rec, err := rr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("error %v does not wrap ErrMalformed", err)
				}
				break
			}
			n++
			if int(rec.CapLen) != len(rec.Data) || rec.CapLen > rec.OrigLen || rec.CapLen > MaxSnapLength ||
				(snapLen > 0 && rec.CapLen > snapLen) || rec.Nsec >= 1e9 {
				t.Fatalf("record %d breaks the rules: %+v", n, rec)
			}
			// Data must lie inside body, right after what was consumed.
			start := len(reenc) + RecordHeaderLen
			if len(rec.Data) > 0 && &rec.Data[0] != &body[start] {
				t.Fatalf("record %d data does not alias body at offset %d", n, start)
			}
			reenc = AppendRecord(reenc, rec.Timestamp(), rec.Data, int(rec.OrigLen))
		}
		if !bytes.Equal(reenc, body[:len(reenc)]) {
			t.Fatalf("records re-encode to different bytes")
		}
		vn, verr := ValidateBody(body, snapLen)
		if vn != n || (verr == nil) != (len(reenc) == len(body)) {
			t.Fatalf("ValidateBody = %d, %v; reader read %d records, %d of %d bytes", vn, verr, n, len(reenc), len(body))
		}
	})
}

// packet sizes: ACKs, small requests and full frames.
func mixedBatch(size int) (body []byte, packets int) {
	sizes := []int{66, 66, 1514, 120, 1514, 66, 583, 1514}
	data := make([]byte, 1514)
	ts := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := 0; len(body) < size; i++ {
		n := sizes[i%len(sizes)]
		body = AppendRecord(body, ts.Add(time.Duration(i)*time.Microsecond), data[:n], n)
		packets++
	}
	return body, packets
}

func BenchmarkAppendRecord(b *testing.B) {
	for _, n := range []int{64, 1514} {
		b.Run(fmt.Sprintf("packet=%d", n), func(b *testing.B) {
			data := make([]byte, n)
			dst := make([]byte, 0, DefaultBatchBytes+RecordHeaderLen+n)
			ts := time.Now()
			b.SetBytes(int64(RecordHeaderLen + n))
			b.ReportAllocs()
			for b.Loop() {
				if len(dst) > DefaultBatchBytes {
					dst = dst[:0]
				}
				dst = AppendRecord(dst, ts, data, n)
			}
		})
	}
}

func BenchmarkRecordReader(b *testing.B) {
	body, packets := mixedBatch(DefaultBatchBytes)
	var rr RecordReader
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		rr.Reset(body, MaxSnapLength)
		n := 0
		for {
			if _, err := rr.Next(); err != nil {
				if !errors.Is(err, io.EOF) {
					b.Fatal(err)
				}
				break
			}
			n++
		}
		if n != packets {
			b.Fatalf("read %d packets, want %d", n, packets)
		}
	}
	b.ReportMetric(float64(packets), "packets/op")
}
