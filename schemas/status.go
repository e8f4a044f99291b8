package schemas

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Bounds of a status report. A report must fit the server's max payload and
// end up in a PacketCapture status in etcd, so lists are capped.
const (
	// MaxStatusObjects bounds Status.Objects: the pcap sink lists the most
	// recent objects, the full index is in ClickHouse.
	MaxStatusObjects = 256
	// MaxObjectNameLength is S3's maximum key length.
	MaxObjectNameLength = 1024
	// MaxErrorLength bounds Status.LastError and Failure.Message.
	MaxErrorLength = 4096
	// MaxFailures bounds Status.Failures: one entry per reason.
	MaxFailures = 8
	// maxReasonLength bounds Failure.Reason.
	maxReasonLength = 64
)

// Source names the kind of process that wrote a status report. The producer
// and the pcap sink of one (capture, node) share a subject, so the router
// tells them apart by this field.
type Source string

// Sources.
const (
	// SourceProducer reports capture state, counters and drops.
	SourceProducer Source = "producer"
	// SourcePcapSink reports the objects written, and its failures and
	// losses.
	SourcePcapSink Source = "sink-pcap"
	// SourceFlowSink reports the flow sink's failures and losses.
	SourceFlowSink Source = "sink-flows"
)

// Failure reasons a sink reports in Status.Failures. Each cost the batches
// it names, which were terminated.
const (
	FailurePanic           = "HandlerPanic"    // handling a batch panicked
	FailureStorageRefused  = "StorageRefused"  // the object store refused an object for good (key too long, access denied, no such bucket)
	FailureDatabaseRefused = "DatabaseRefused" // ClickHouse refused rows for good (a schema or type error)
	FailureMalformed       = "MalformedBatch"  // a batch could not be decoded
)

// Failure is one kind of failure a sink had with one (capture, node).
type Failure struct {
	// Reason is one of the Failure constants (letters only, at most 64).
	Reason string `json:"reason"`
	// Batches is the number of batches it cost since the sink started.
	Batches uint64 `json:"batches"`
	// Message is the last such error, in words for humans.
	Message string `json:"message,omitempty"`
}

// State is the capture state on one node, with the values (and spelling) of
// Calico's PacketCapture status.files[].state.
type State string

// States.
const (
	// StateScheduled: the command is known but the start time is ahead.
	StateScheduled State = "Scheduled"
	// StateWaitingForTraffic: capturing, but no packet seen yet.
	StateWaitingForTraffic State = "WaitingForTraffic"
	// StateCapturing: packets are flowing.
	StateCapturing State = "Capturing"
	// StateFinished: the end time passed or the capture was stopped.
	StateFinished State = "Finished"
	// StateError: the capture failed; LastError says why.
	StateError State = "Error"
)

// Status is one report on one capture on one node, published on
// StatusSubject. Counters are totals since the capture started on that
// node, not deltas, so a lost or repeated report does no harm and the latest
// one is always the truth.
type Status struct {
	// Version is the format version. EncodeStatus always writes Version.
	Version int `json:"version"`
	// Source is the kind of process that wrote the report.
	Source Source `json:"source"`
	// Namespace is the PacketCapture's namespace.
	Namespace string `json:"namespace"`
	// Name is the PacketCapture's name.
	Name string `json:"name"`
	// UID is the PacketCapture's UID, so a report about a deleted capture
	// is not applied to a new one with the same name.
	UID string `json:"uid"`
	// Generation is the generation of the command the report reflects.
	Generation int64 `json:"generation,omitempty"`
	// Node is the reporting node.
	Node string `json:"node"`
	// State is the capture state on Node.
	State State `json:"state"`
	// Packets is the number of packets captured (producer) or written
	// (pcap sink).
	Packets uint64 `json:"packets"`
	// Bytes is the number of captured bytes (record data, not wire length).
	Bytes uint64 `json:"bytes"`
	// KernelDrops counts packets the kernel dropped before the producer
	// read them.
	KernelDrops uint64 `json:"kernelDrops"`
	// PublishDrops counts packets the producer dropped because JetStream
	// refused or was unreachable.
	PublishDrops uint64 `json:"publishDrops"`
	// LastError is the last error, if any, in words for humans.
	LastError string `json:"lastError,omitempty"`
	// Interfaces are the interfaces being captured on.
	Interfaces []string `json:"interfaces,omitempty"`
	// Directory is, for the pcap sink, the object-store prefix of this
	// (capture, node), e.g. s3://bucket/prefix/ns/name/node/.
	Directory string `json:"directory,omitempty"`
	// Objects are, for the pcap sink, the most recent completed object
	// names under Directory, at most MaxStatusObjects.
	Objects []string `json:"objects,omitempty"`
	// ObjectCount is, for the pcap sink, the number of completed objects
	// under Directory (Objects lists only the most recent).
	ObjectCount uint64 `json:"objectCount,omitempty"`
	// LostBatches and LostPackets count, for a sink, the batches and
	// packets that never reached it although the producer published them:
	// the stream's limits (MaxAge, MaxBytes) removed them first. A sink
	// finds them as gaps in the batches' sequence numbers.
	LostBatches uint64 `json:"lostBatches,omitempty"`
	LostPackets uint64 `json:"lostPackets,omitempty"`
	// Failures are, for a sink, its failures with this (capture, node)
	// since it started, one entry per reason.
	Failures []Failure `json:"failures,omitempty"`
	// Time is when the report was made.
	Time time.Time `json:"time"`
}

// EncodeStatus validates s and encodes it as JSON with the current Version.
// s is not modified.
func EncodeStatus(s *Status) ([]byte, error) {
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("encode status: %w", err)
	}
	cp := *s
	cp.Version = Version
	b, err := json.Marshal(&cp)
	if err != nil {
		return nil, fmt.Errorf("encode status: %w", err)
	}
	return b, nil
}

// DecodeStatus decodes and validates a status report, with the error
// conventions of DecodeCommand.
func DecodeStatus(b []byte) (*Status, error) {
	var s Status
	if err := decodeJSON(b, &s, &s.Version); err != nil {
		return nil, fmt.Errorf("decode status: %w", err)
	}
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("decode status: %w", err)
	}
	return &s, nil
}

// Validate checks a report, except Version. Errors wrap ErrMalformed.
func (s *Status) Validate() error {
	if s == nil {
		return fmt.Errorf("%w: nil status", ErrMalformed)
	}
	switch s.Source {
	case SourceProducer, SourcePcapSink, SourceFlowSink:
	default:
		return fmt.Errorf("%w: source %s: want %q, %q or %q", ErrMalformed, quote(string(s.Source)), SourceProducer, SourcePcapSink, SourceFlowSink)
	}
	if err := checkKey(s.Namespace, s.Name, s.Node); err != nil {
		return err
	}
	if err := checkUID(s.UID); err != nil {
		return err
	}
	if s.Generation < 0 {
		return fmt.Errorf("%w: generation %d is negative", ErrMalformed, s.Generation)
	}
	switch s.State {
	case StateScheduled, StateWaitingForTraffic, StateCapturing, StateFinished, StateError:
	default:
		return fmt.Errorf("%w: state %s", ErrMalformed, quote(string(s.State)))
	}
	if len(s.LastError) > MaxErrorLength || !utf8.ValidString(s.LastError) {
		return fmt.Errorf("%w: last error: want valid UTF-8 of at most %d bytes", ErrMalformed, MaxErrorLength)
	}
	if len(s.Interfaces) > MaxEndpoints {
		return fmt.Errorf("%w: %d interfaces, more than %d", ErrMalformed, len(s.Interfaces), MaxEndpoints)
	}
	for _, iface := range s.Interfaces {
		if err := CheckInterface(iface); err != nil {
			return err
		}
	}
	if err := checkObjectName("directory", s.Directory); err != nil {
		return err
	}
	if len(s.Objects) > MaxStatusObjects {
		return fmt.Errorf("%w: %d objects, more than %d", ErrMalformed, len(s.Objects), MaxStatusObjects)
	}
	for _, o := range s.Objects {
		if o == "" {
			return fmt.Errorf("%w: empty object name", ErrMalformed)
		}
		if err := checkObjectName("object", o); err != nil {
			return err
		}
	}
	if len(s.Failures) > MaxFailures {
		return fmt.Errorf("%w: %d failures, more than %d", ErrMalformed, len(s.Failures), MaxFailures)
	}
	for _, f := range s.Failures {
		if err := f.validate(); err != nil {
			return err
		}
	}
	if s.Time.IsZero() {
		return fmt.Errorf("%w: time is zero", ErrMalformed)
	}
	return nil
}

func (f Failure) validate() error {
	if f.Reason == "" || len(f.Reason) > maxReasonLength || strings.IndexFunc(f.Reason, func(r rune) bool {
		return (r < 'a' || r > 'z') && (r < 'A' || r > 'Z')
	}) >= 0 {
		return fmt.Errorf("%w: failure reason %s: want 1 to %d letters", ErrMalformed, quote(f.Reason), maxReasonLength)
	}
	if len(f.Message) > MaxErrorLength || !utf8.ValidString(f.Message) {
		return fmt.Errorf("%w: failure message: want valid UTF-8 of at most %d bytes", ErrMalformed, MaxErrorLength)
	}
	return nil
}

// ClipText makes s fit a bounded text field of a report: invalid UTF-8
// becomes U+FFFD, and the text is cut on a rune boundary to at most n
// bytes. Producers and sinks pass every error through it before it goes
// into a report, so a long or odd error never makes a report invalid.
func ClipText(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	cut := max(n, 0)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

// checkObjectName bounds an object key or prefix and rejects control
// characters and invalid UTF-8, which S3 tolerates but kubectl output and
// shell copy-paste do not.
func checkObjectName(what, s string) error {
	if len(s) > MaxObjectNameLength || !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s %s: want valid UTF-8 of at most %d bytes", ErrMalformed, what, quote(s), MaxObjectNameLength)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%w: %s %s: control character %U", ErrMalformed, what, quote(s), r)
		}
	}
	return nil
}
