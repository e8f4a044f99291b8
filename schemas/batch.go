package schemas

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Sizes of the pcap structures and batches.
const (
	// PcapHeaderLen is the size of the pcap file global header.
	PcapHeaderLen = 24
	// RecordHeaderLen is the size of a pcap record header.
	RecordHeaderLen = 16
	// MaxSnapLength is the largest snap length accepted anywhere, the value
	// tcpdump and Wireshark use; larger records are corrupt.
	MaxSnapLength = 262144

	// MaxBatchBytes bounds one batch message, headers and body together
	// (the server counts both). It is the server's default max payload
	// and StreamPackets' MaxMsgSize.
	MaxBatchBytes = 1 << 20
	// MaxBatchHeaderBytes is the room reserved for the NATS headers of a
	// batch; the longest legal header set is well below it.
	MaxBatchHeaderBytes = 4 << 10
	// MaxBatchBodyBytes is the largest body a producer may publish.
	MaxBatchBodyBytes = MaxBatchBytes - MaxBatchHeaderBytes
	// DefaultBatchBytes is the recommended body size at which a producer
	// flushes: large enough to amortise per-message costs, small enough to
	// leave headroom under MaxBatchBodyBytes for one more full packet.
	DefaultBatchBytes = 512 << 10
)

// Link types (LINKTYPE_* values of the pcap format) that capstream writes.
const (
	// LinkTypeEthernet is what AF_PACKET yields on a veth.
	LinkTypeEthernet = 1
	// LinkTypeRaw is raw IP, for interfaces without a link layer.
	LinkTypeRaw = 101
	// LinkTypeLinuxSLL is Linux cooked capture v1.
	LinkTypeLinuxSLL = 113

	// maxLinkType: the pcap "network" field keeps the link type in its low
	// 16 bits; the high bits are FCS flags that capstream never sets.
	maxLinkType = 0xffff
)

// Names of the NATS headers of a packet batch. Each appears exactly once,
// except HeaderLast, which appears at most once.
// Together with the subject they let a sink file a batch without looking
// at its body.
const (
	// HeaderVersion is the format Version, in decimal.
	HeaderVersion = "Capstream-Version"
	// HeaderNamespace is the capture's namespace.
	HeaderNamespace = "Capstream-Namespace"
	// HeaderCapture is the PacketCapture's name.
	HeaderCapture = "Capstream-Capture"
	// HeaderCaptureUID is the PacketCapture's UID.
	HeaderCaptureUID = "Capstream-Capture-Uid"
	// HeaderNode is the capturing node.
	HeaderNode = "Capstream-Node"
	// HeaderPod is the captured pod.
	HeaderPod = "Capstream-Pod"
	// HeaderInterface is the interface the packets were captured on.
	HeaderInterface = "Capstream-Interface"
	// HeaderLinkType is the pcap link type of the records, in decimal.
	HeaderLinkType = "Capstream-Link-Type"
	// HeaderSnapLength is the snap length the records were cut to.
	HeaderSnapLength = "Capstream-Snap-Length"
	// HeaderBatchSeq is the producer's batch sequence number for this
	// interface, in decimal.
	HeaderBatchSeq = "Capstream-Batch-Seq"
	// HeaderPackets is the number of records in the body.
	HeaderPackets = "Capstream-Packets"
	// HeaderProducer identifies the producer instance (an epoch chosen at
	// start), so sequence numbers restarting at 1 do not collide.
	HeaderProducer = "Capstream-Producer"
	// HeaderMsgID is JetStream's de-duplication header, set to MsgID.
	HeaderMsgID = jetstream.MsgIDHeader
	// HeaderLast, present only as "true", marks the last batch of an
	// interface's capture run (the capture stopped, the interface left it,
	// the replay ended or the producer shut down). It is the only optional
	// header. Sinks complete what they hold for the interface on it instead
	// of waiting for the interface to go quiet.
	HeaderLast = "Capstream-Last"
	// HeaderPacketsBefore, HeaderDroppedBatches and HeaderDroppedPackets
	// are the run's counts before this batch (see BatchHeader.Counts):
	// optional together, each a decimal. Producers before them sent none.
	HeaderPacketsBefore  = "Capstream-Packets-Before"
	HeaderDroppedBatches = "Capstream-Dropped-Batches"
	HeaderDroppedPackets = "Capstream-Dropped-Packets"
)

const maxProducerLength = 64

// BatchHeader is the metadata of a packet batch, carried in NATS headers.
type BatchHeader struct {
	// Namespace is the capture's namespace.
	Namespace string
	// Capture is the PacketCapture's name.
	Capture string
	// CaptureUID is the PacketCapture's UID.
	CaptureUID string
	// Node is the capturing node.
	Node string
	// Pod is the pod whose interface was captured.
	Pod string
	// Interface is the captured interface.
	Interface string
	// LinkType is the pcap link type of the records.
	LinkType uint32
	// SnapLength is the snap length the records were cut to, 1 to
	// MaxSnapLength.
	SnapLength uint32
	// Seq numbers the producer's batches of one interface, from 1.
	Seq uint64
	// Packets is the number of records in the body. It is 0 only in a
	// Last batch with nothing left to send.
	Packets uint32
	// Last marks the interface's last batch of this producer's capture
	// run; see HeaderLast.
	Last bool
	// Producer identifies the producer instance: letters, digits, '-', '_'
	// and '.', at most 64 bytes.
	Producer string
	// Counts are the run's counts before this batch, which let a sink
	// that finds a gap in Seq tell how many packets the stream lost;
	// Counts.Known is false in batches of producers that did not send
	// them.
	Counts RunCounts
}

// RunCounts are cumulative counts of one producer run on one interface
// (one sequence of Seq), as the producer knew them when it published the
// batch they travel in. A sink finding the batches after Seq a missing
// before Seq b knows the stream lost (b.PacketsBefore - a.PacketsBefore -
// a.Packets) packets less the ones the producer itself dropped meanwhile
// (the difference of DroppedPackets), which it already counted as
// publish drops.
type RunCounts struct {
	// Known is set when the batch carries the counts.
	Known bool
	// PacketsBefore is the number of packets in the run's batches before
	// this one, published or dropped.
	PacketsBefore uint64
	// DroppedBatches and DroppedPackets are the run's earlier batches, and
	// their packets, that the producer counted as publish drops.
	DroppedBatches, DroppedPackets uint64
}

// MsgID returns the batch's Nats-Msg-Id: capture UID, node, interface,
// producer and sequence joined by ':'. None of the parts may contain ':' (it
// is not valid in UIDs, node names, producer IDs or Linux interface names),
// so distinct batches never share an ID, and a retried publish of the same
// batch always has the same one, which is what JetStream de-duplicates on.
func (h *BatchHeader) MsgID() string {
	var buf [20]byte
	seq := strconv.AppendUint(buf[:0], h.Seq, 10)
	var sb strings.Builder
	sb.Grow(len(h.CaptureUID) + len(h.Node) + len(h.Interface) + len(h.Producer) + len(seq) + 4)
	sb.WriteString(h.CaptureUID)
	sb.WriteByte(':')
	sb.WriteString(h.Node)
	sb.WriteByte(':')
	sb.WriteString(h.Interface)
	sb.WriteByte(':')
	sb.WriteString(h.Producer)
	sb.WriteByte(':')
	sb.Write(seq)
	return sb.String()
}

// Encode sets the batch headers, including Nats-Msg-Id, on hdr, replacing
// any previous values. It does not validate: producers build headers from
// validated commands and call Validate once per interface, not per batch.
func (h *BatchHeader) Encode(hdr nats.Header) {
	hdr.Set(HeaderVersion, strconv.Itoa(Version))
	hdr.Set(HeaderNamespace, h.Namespace)
	hdr.Set(HeaderCapture, h.Capture)
	hdr.Set(HeaderCaptureUID, h.CaptureUID)
	hdr.Set(HeaderNode, h.Node)
	hdr.Set(HeaderPod, h.Pod)
	hdr.Set(HeaderInterface, h.Interface)
	hdr.Set(HeaderLinkType, strconv.FormatUint(uint64(h.LinkType), 10))
	hdr.Set(HeaderSnapLength, strconv.FormatUint(uint64(h.SnapLength), 10))
	hdr.Set(HeaderBatchSeq, strconv.FormatUint(h.Seq, 10))
	hdr.Set(HeaderPackets, strconv.FormatUint(uint64(h.Packets), 10))
	hdr.Set(HeaderProducer, h.Producer)
	hdr.Set(HeaderMsgID, h.MsgID())
	if h.Last {
		hdr.Set(HeaderLast, "true")
	} else {
		hdr.Del(HeaderLast)
	}
	if c := h.Counts; c.Known {
		hdr.Set(HeaderPacketsBefore, strconv.FormatUint(c.PacketsBefore, 10))
		hdr.Set(HeaderDroppedBatches, strconv.FormatUint(c.DroppedBatches, 10))
		hdr.Set(HeaderDroppedPackets, strconv.FormatUint(c.DroppedPackets, 10))
	} else {
		hdr.Del(HeaderPacketsBefore)
		hdr.Del(HeaderDroppedBatches)
		hdr.Del(HeaderDroppedPackets)
	}
}

// Validate checks every field. Errors wrap ErrMalformed.
func (h *BatchHeader) Validate() error {
	if err := checkKey(h.Namespace, h.Capture, h.Node); err != nil {
		return err
	}
	if err := checkUID(h.CaptureUID); err != nil {
		return err
	}
	if err := checkName(h.Pod); err != nil {
		return fmt.Errorf("%w: pod: %w", ErrMalformed, err)
	}
	if err := CheckInterface(h.Interface); err != nil {
		return err
	}
	if h.LinkType > maxLinkType {
		return fmt.Errorf("%w: link type %d: above %d", ErrMalformed, h.LinkType, maxLinkType)
	}
	if h.SnapLength == 0 || h.SnapLength > MaxSnapLength {
		return fmt.Errorf("%w: snap length %d: want 1 to %d", ErrMalformed, h.SnapLength, MaxSnapLength)
	}
	// Every record has a header, which bounds the count; only a Last batch
	// may be empty.
	if h.Packets == 0 && !h.Last || h.Packets > MaxBatchBodyBytes/RecordHeaderLen {
		return fmt.Errorf("%w: packets %d: want 1 to %d (0 only in a last batch)", ErrMalformed, h.Packets, MaxBatchBodyBytes/RecordHeaderLen)
	}
	if h.Producer == "" || len(h.Producer) > maxProducerLength {
		return fmt.Errorf("%w: producer %s: want 1 to %d bytes", ErrMalformed, quote(h.Producer), maxProducerLength)
	}
	for i := 0; i < len(h.Producer); i++ {
		if c := h.Producer[i]; !isAlnum(c) && c != '-' && c != '_' && c != '.' {
			return fmt.Errorf("%w: producer %s: byte %d is %q", ErrMalformed, quote(h.Producer), i, c)
		}
	}
	// Earlier batches are Seq-1 at most, and dropped ones among them.
	if c := h.Counts; c.Known && (h.Seq == 0 || c.DroppedBatches >= h.Seq || c.DroppedPackets > c.PacketsBefore) {
		return fmt.Errorf("%w: run counts %d/%d/%d: want dropped batches below seq %d and dropped packets at most packets before",
			ErrMalformed, c.PacketsBefore, c.DroppedBatches, c.DroppedPackets, h.Seq)
	}
	return nil
}

// DecodeBatchHeader reads and validates the batch headers. Each header must
// appear exactly once, numbers must be canonical decimals, and Nats-Msg-Id
// must equal MsgID, so that only what Encode writes is accepted. Errors
// wrap ErrUnknownVersion for another format version and ErrMalformed for
// anything else.
func DecodeBatchHeader(hdr nats.Header) (BatchHeader, error) {
	var h BatchHeader
	d := headerDecoder{hdr: hdr}
	if v := d.str(HeaderVersion); d.err == nil && v != strconv.Itoa(Version) {
		return BatchHeader{}, fmt.Errorf("decode batch header: %w %s", ErrUnknownVersion, quote(v))
	}
	h.Namespace = d.str(HeaderNamespace)
	h.Capture = d.str(HeaderCapture)
	h.CaptureUID = d.str(HeaderCaptureUID)
	h.Node = d.str(HeaderNode)
	h.Pod = d.str(HeaderPod)
	h.Interface = d.str(HeaderInterface)
	h.LinkType = uint32(d.uint(HeaderLinkType, math.MaxUint32))
	h.SnapLength = uint32(d.uint(HeaderSnapLength, math.MaxUint32))
	h.Seq = d.uint(HeaderBatchSeq, math.MaxUint64)
	h.Packets = uint32(d.uint(HeaderPackets, math.MaxUint32))
	h.Producer = d.str(HeaderProducer)
	msgID := d.str(HeaderMsgID)
	if v, ok := hdr[HeaderLast]; ok && d.err == nil {
		if len(v) != 1 || v[0] != "true" {
			d.err = fmt.Errorf("%w: header %s: %s, want one value \"true\" or none", ErrMalformed, HeaderLast, quote(strings.Join(v, ",")))
		}
		h.Last = true
	}
	_, p := hdr[HeaderPacketsBefore]
	_, b := hdr[HeaderDroppedBatches]
	_, dp := hdr[HeaderDroppedPackets]
	if p || b || dp {
		h.Counts = RunCounts{
			Known:          true,
			PacketsBefore:  d.uint(HeaderPacketsBefore, math.MaxUint64),
			DroppedBatches: d.uint(HeaderDroppedBatches, math.MaxUint64),
			DroppedPackets: d.uint(HeaderDroppedPackets, math.MaxUint64),
		}
	}
	if d.err != nil {
		return BatchHeader{}, fmt.Errorf("decode batch header: %w", d.err)
	}
	if err := h.Validate(); err != nil {
		return BatchHeader{}, fmt.Errorf("decode batch header: %w", err)
	}
	if want := h.MsgID(); msgID != want {
		return BatchHeader{}, fmt.Errorf("decode batch header: %w: %s %s, want %s", ErrMalformed, HeaderMsgID, quote(msgID), quote(want))
	}
	return h, nil
}

// headerDecoder reads headers and keeps the first error, so the decoding
// reads as a list of fields.
type headerDecoder struct {
	hdr nats.Header
	err error
}

func (d *headerDecoder) str(key string) string {
	if d.err != nil {
		return ""
	}
	v := d.hdr[key]
	if len(v) != 1 {
		d.err = fmt.Errorf("%w: header %s: %d values, want 1", ErrMalformed, key, len(v))
		return ""
	}
	return v[0]
}

func (d *headerDecoder) uint(key string, max uint64) uint64 {
	s := d.str(key)
	if d.err != nil {
		return 0
	}
	n, err := strconv.ParseUint(s, 10, 64)
	// Canonical form only: "007" would decode to a value that encodes
	// differently, and the Nats-Msg-Id check would then be confusing.
	if err != nil || n > max || (len(s) > 1 && s[0] == '0') {
		d.err = fmt.Errorf("%w: header %s: %s is not a decimal 0 to %d", ErrMalformed, key, quote(s), max)
		return 0
	}
	return n
}

// AppendPcapHeader appends the pcap file global header that precedes a run
// of records: little-endian nanosecond-resolution magic 0xa1b23c4d, version
// 2.4, zero time zone and accuracy. The pcap sink writes it once per object
// and then appends batch bodies unchanged.
func AppendPcapHeader(dst []byte, linkType, snapLen uint32) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, 0xa1b23c4d)
	dst = binary.LittleEndian.AppendUint16(dst, 2)
	dst = binary.LittleEndian.AppendUint16(dst, 4)
	dst = binary.LittleEndian.AppendUint32(dst, 0) // thiszone
	dst = binary.LittleEndian.AppendUint32(dst, 0) // sigfigs
	dst = binary.LittleEndian.AppendUint32(dst, snapLen)
	return binary.LittleEndian.AppendUint32(dst, linkType)
}

// AppendRecord appends one pcap record (header with a nanosecond timestamp,
// then data) to dst and returns the extended slice. It does not allocate
// when dst has room for RecordHeaderLen+len(data) more bytes.
//
// data must already be cut to the snap length; origLen is the length on the
// wire and is raised to len(data) if smaller, so the record is always
// readable. The format's 32-bit seconds cover 1970 to 2106; ts outside that
// range is clamped to it.
func AppendRecord(dst []byte, ts time.Time, data []byte, origLen int) []byte {
	sec, nsec := ts.Unix(), ts.Nanosecond()
	switch {
	case sec < 0:
		sec, nsec = 0, 0
	case sec > math.MaxUint32:
		sec, nsec = math.MaxUint32, 999_999_999
	}
	if origLen < len(data) {
		origLen = len(data)
	}
	orig := uint32(math.MaxUint32)
	if int64(origLen) < math.MaxUint32 {
		orig = uint32(origLen)
	}
	dst = binary.LittleEndian.AppendUint32(dst, uint32(sec))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(nsec))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(data)))
	dst = binary.LittleEndian.AppendUint32(dst, orig)
	return append(dst, data...)
}

// Record is one decoded pcap record. Data aliases the body it was read from:
// copy it to keep it beyond the body's lifetime.
type Record struct {
	// Sec and Nsec are the capture time since the Unix epoch.
	Sec, Nsec uint32
	// CapLen is the number of bytes captured, len(Data).
	CapLen uint32
	// OrigLen is the packet's length on the wire.
	OrigLen uint32
	// Data is the captured bytes.
	Data []byte
}

// Timestamp returns the capture time in UTC.
func (r *Record) Timestamp() time.Time {
	return time.Unix(int64(r.Sec), int64(r.Nsec)).UTC()
}

// RecordReader iterates over the records of a batch body without copying.
// The zero value reads an empty body.
type RecordReader struct {
	body    []byte
	off     int
	n       int // records returned so far
	snapLen uint32
	err     error
}

// NewRecordReader returns a reader over body. snapLen, when non-zero, is the
// batch's snap length and no record may capture more; MaxSnapLength always
// applies.
func NewRecordReader(body []byte, snapLen uint32) *RecordReader {
	r := &RecordReader{}
	r.Reset(body, snapLen)
	return r
}

// Reset makes r read body from the start, so one reader can serve every
// batch of a consumer without allocating.
func (r *RecordReader) Reset(body []byte, snapLen uint32) {
	if snapLen == 0 || snapLen > MaxSnapLength {
		snapLen = MaxSnapLength
	}
	*r = RecordReader{body: body, snapLen: snapLen}
}

// Next returns the next record, or io.EOF after the last one. A body that
// ends inside a record returns an error wrapping ErrTruncated and
// ErrMalformed; a record that breaks the format (capture longer than the
// wire length or the snap length, nanoseconds of a second or more) one
// wrapping ErrMalformed. Errors are sticky: later calls return the same.
func (r *RecordReader) Next() (Record, error) {
	if r.err != nil {
		return Record{}, r.err
	}
	rest := r.body[r.off:]
	if len(rest) == 0 {
		r.err = io.EOF
		return Record{}, r.err
	}
	if len(rest) < RecordHeaderLen {
		return Record{}, r.fail(ErrTruncated, "%d bytes left, less than a record header", len(rest))
	}
	rec := Record{
		Sec:     binary.LittleEndian.Uint32(rest[0:4]),
		Nsec:    binary.LittleEndian.Uint32(rest[4:8]),
		CapLen:  binary.LittleEndian.Uint32(rest[8:12]),
		OrigLen: binary.LittleEndian.Uint32(rest[12:16]),
	}
	switch {
	case rec.Nsec >= 1_000_000_000:
		return Record{}, r.fail(nil, "nanoseconds %d", rec.Nsec)
	case rec.CapLen > rec.OrigLen:
		return Record{}, r.fail(nil, "captured length %d above original length %d", rec.CapLen, rec.OrigLen)
	case rec.CapLen > r.snapLen:
		return Record{}, r.fail(nil, "captured length %d above snap length %d", rec.CapLen, r.snapLen)
	case uint64(rec.CapLen) > uint64(len(rest)-RecordHeaderLen):
		return Record{}, r.fail(ErrTruncated, "captured length %d, %d bytes left", rec.CapLen, len(rest)-RecordHeaderLen)
	}
	end := RecordHeaderLen + int(rec.CapLen)
	// The capacity limit stops a caller's append from overwriting the next
	// record.
	rec.Data = rest[RecordHeaderLen:end:end]
	r.off += end
	r.n++
	return rec, nil
}

// fail records a sticky error that names the record and its offset.
func (r *RecordReader) fail(kind error, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if kind != nil {
		r.err = fmt.Errorf("record %d at offset %d: %w: %w: %s", r.n, r.off, ErrMalformed, kind, msg)
	} else {
		r.err = fmt.Errorf("record %d at offset %d: %w: %s", r.n, r.off, ErrMalformed, msg)
	}
	return r.err
}

// ValidateBody checks a whole batch body as RecordReader would read it and
// returns the number of records, which a sink compares with the
// Capstream-Packets header.
func ValidateBody(body []byte, snapLen uint32) (packets int, err error) {
	var r RecordReader
	r.Reset(body, snapLen)
	for {
		if _, err := r.Next(); err != nil {
			if errors.Is(err, io.EOF) {
				return r.n, nil
			}
			return r.n, err
		}
	}
}
