package pcapstore

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/capstream/capstream/internal/pcapobjects"
	"github.com/capstream/capstream/schemas"
)

// ifaceKey identifies an interface of a capture on a node: the unit of one
// open object and of the dedup state.
type ifaceKey struct {
	uid, node, iface string
}

// seqRange is an inclusive range of producer batch sequences.
type seqRange struct{ lo, hi uint64 }

// ranges is a small sorted set of producer batch sequences. A producer
// numbers an interface's batches 1, 2, 3..., so an object normally holds
// one range; redeliveries out of order add a few.
type ranges []seqRange

func (r ranges) has(s uint64) bool {
	for _, x := range r {
		if x.lo <= s && s <= x.hi {
			return true
		}
	}
	return false
}

func (r ranges) add(s uint64) ranges {
	for i := range r {
		switch {
		case s+1 == r[i].lo:
			r[i].lo = s
			return r
		case s == r[i].hi+1:
			r[i].hi = s
			if i+1 < len(r) && r[i+1].lo == s+1 {
				r[i].hi = r[i+1].hi
				r = append(r[:i+1], r[i+2:]...)
			}
			return r
		case s < r[i].lo:
			r = append(r, seqRange{})
			copy(r[i+1:], r[i:])
			r[i] = seqRange{s, s}
			return r
		}
	}
	return append(r, seqRange{s, s})
}

// String renders "1-3,5,7-9", the Capstream-Batches metadata value.
func (r ranges) String() string {
	var b strings.Builder
	for i, x := range r {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatUint(x.lo, 10))
		if x.hi != x.lo {
			b.WriteByte('-')
			b.WriteString(strconv.FormatUint(x.hi, 10))
		}
	}
	return b.String()
}

func parseRanges(s string) (ranges, error) {
	var r ranges
	if s == "" {
		return r, nil
	}
	for _, part := range strings.Split(s, ",") {
		lo, hi, found := strings.Cut(part, "-")
		a, err := strconv.ParseUint(lo, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("batch range %q: %w", part, err)
		}
		b := a
		if found {
			if b, err = strconv.ParseUint(hi, 10, 64); err != nil || b < a {
				return nil, fmt.Errorf("batch range %q: bad upper bound", part)
			}
		}
		r = append(r, seqRange{a, b})
	}
	return r, nil
}

// maxRanges bounds the ranges of one object so its metadata stays far
// below S3's 2 KiB user metadata limit; one more range rotates the object.
const maxRanges = 32

// held is a batch whose packets are in an open object, unacked.
type held struct {
	streamSeq uint64
	reply     string
}

// object is one open pcap object: the bytes (global header, then batch
// bodies appended unchanged) and what its metadata and index row need.
type object struct {
	key      ifaceKey
	hdr      schemas.BatchHeader // of the first batch
	name     string
	firstSeq uint64 // stream sequences
	lastSeq  uint64
	firstTs  int64
	lastTs   int64
	packets  uint64
	buf      *buffer
	batches  []held
	seqs     ranges // producer batch sequences
	opened   time.Time
	touched  time.Time
	reason   string    // why it was completed, for the metrics
	sealed   time.Time // when it stopped taking batches
	// retries counts the failed attempts to complete it; retryAt is when
	// the next may start. Each object backs off on its own, so one
	// capture whose writes fail never slows another's.
	retries int
	retryAt time.Time
}

// objectName is the key layout of DESIGN.md ("Pcap objects"):
// <prefix>/<namespace>/<capture>/<uid>/<node>/<pod>_<iface>/<start UTC>-<first stream seq>.pcap.
// It depends only on the first batch, so the same batches rebuild the same
// key after a crash.
func objectName(prefix string, h *schemas.BatchHeader, start int64, firstSeq uint64) string {
	return fmt.Sprintf("%s%s-%d.pcap", ifaceDir(prefix, h), time.Unix(0, start).UTC().Format("20060102T150405.000000000Z"), firstSeq)
}

// nodeDir is the "directory" of one capture's objects on one node, with a
// trailing slash: under schemas.CaptureDir, so a capture re-created with
// the same name (a new UID) never shares it with its predecessor.
func nodeDir(prefix string, h *schemas.BatchHeader) string {
	return schemas.CaptureDir(prefix, h.Namespace, h.Capture, h.CaptureUID) + schemas.KeySegment(h.Node) + "/"
}

// ifaceDir is the "directory" of one interface's objects, with a trailing
// slash. Each segment is bounded (schemas.KeySegment): a 253-byte pod name
// would otherwise make a segment S3 servers on a file system refuse, and
// the sink would retry that upload forever.
func ifaceDir(prefix string, h *schemas.BatchHeader) string {
	return nodeDir(prefix, h) + schemas.KeySegment(h.Pod+"_"+h.Interface) + "/"
}

// The object metadata keys are pcapobjects.Meta*, which the readers (the
// access API, the CLI) share.

func (o *object) metadata(sum string) map[string]string {
	return map[string]string{
		pcapobjects.MetaNamespace: o.hdr.Namespace,
		pcapobjects.MetaCapture:   o.hdr.Capture,
		pcapobjects.MetaUID:       o.hdr.CaptureUID,
		pcapobjects.MetaNode:      o.hdr.Node,
		pcapobjects.MetaPod:       o.hdr.Pod,
		pcapobjects.MetaInterface: o.hdr.Interface,
		pcapobjects.MetaFirstTime: time.Unix(0, o.firstTs).UTC().Format(time.RFC3339Nano),
		pcapobjects.MetaLastTime:  time.Unix(0, o.lastTs).UTC().Format(time.RFC3339Nano),
		pcapobjects.MetaPackets:   strconv.FormatUint(o.packets, 10),
		pcapobjects.MetaFirstSeq:  strconv.FormatUint(o.firstSeq, 10),
		pcapobjects.MetaLastSeq:   strconv.FormatUint(o.lastSeq, 10),
		pcapobjects.MetaProducer:  o.hdr.Producer,
		pcapobjects.MetaBatches:   o.seqs.String(),
		pcapobjects.MetaSHA256:    sum,
		pcapobjects.MetaLinkType:  strconv.FormatUint(uint64(o.hdr.LinkType), 10),
	}
}

// indexRow is a pcap_objects row.
type indexRow struct {
	Namespace, Capture, UID, Node, Pod, Interface string
	Key                                           string
	Size, Packets                                 uint64
	FirstTs, LastTs                               int64
	FirstSeq, LastSeq                             uint64
	LinkType                                      uint32
	SHA256                                        string
	Producer                                      string
	Batches                                       ranges
}

func (o *object) row(sum string) indexRow {
	return indexRow{
		Namespace: o.hdr.Namespace, Capture: o.hdr.Capture, UID: o.hdr.CaptureUID, Node: o.hdr.Node, Pod: o.hdr.Pod, Interface: o.hdr.Interface,
		Key: o.name, Size: uint64(o.buf.Len()), Packets: o.packets, FirstTs: o.firstTs, LastTs: o.lastTs,
		FirstSeq: o.firstSeq, LastSeq: o.lastSeq, LinkType: o.hdr.LinkType, SHA256: sum,
		Producer: o.hdr.Producer, Batches: o.seqs,
	}
}

// rowFromMetadata rebuilds the index row of a completed object from its
// user metadata, which is how a crash between the upload and the index
// insert is repaired.
func rowFromMetadata(key string, size int64, meta map[string]string) (indexRow, error) {
	get := func(k string) string { return meta[k] }
	r := indexRow{
		Namespace: get(pcapobjects.MetaNamespace), Capture: get(pcapobjects.MetaCapture), UID: get(pcapobjects.MetaUID), Node: get(pcapobjects.MetaNode),
		Pod: get(pcapobjects.MetaPod), Interface: get(pcapobjects.MetaInterface), Key: key, Size: uint64(size),
		SHA256: get(pcapobjects.MetaSHA256), Producer: get(pcapobjects.MetaProducer),
	}
	var errs []error
	num := func(k string) uint64 {
		n, err := strconv.ParseUint(get(k), 10, 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("metadata %s: %w", k, err))
		}
		return n
	}
	ts := func(k string) int64 {
		t, err := time.Parse(time.RFC3339Nano, get(k))
		if err != nil {
			errs = append(errs, fmt.Errorf("metadata %s: %w", k, err))
		}
		return t.UnixNano()
	}
	r.Packets, r.FirstSeq, r.LastSeq = num(pcapobjects.MetaPackets), num(pcapobjects.MetaFirstSeq), num(pcapobjects.MetaLastSeq)
	r.LinkType = uint32(num(pcapobjects.MetaLinkType))
	r.FirstTs, r.LastTs = ts(pcapobjects.MetaFirstTime), ts(pcapobjects.MetaLastTime)
	b, err := parseRanges(get(pcapobjects.MetaBatches))
	if err != nil {
		errs = append(errs, err)
	}
	r.Batches = b
	if r.UID == "" || r.Producer == "" {
		errs = append(errs, errors.New("metadata: capture uid or producer missing"))
	}
	return r, errors.Join(errs...)
}
