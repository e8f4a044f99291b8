package schemas

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Bounds of a command. They are sanity limits against corrupt or hostile
// input, far above what a real capture needs; the payload must also fit the
// server's max payload.
const (
	// MaxEndpoints bounds the endpoints of one capture on one node.
	MaxEndpoints = 4096
	// MaxFilters bounds the filter rules of a capture.
	MaxFilters = 64
	// MaxPorts bounds the ports and port ranges of one filter rule.
	MaxPorts = 64
	// MaxLabels bounds the labels copied into one endpoint.
	MaxLabels = 128
	// MaxInterfaceLength is the longest Linux interface name (IFNAMSIZ - 1).
	MaxInterfaceLength = 15

	maxLabelBytes = 512
	maxUIDLength  = 128
	// maxJSONBytes bounds command and status bodies: the server's default
	// max payload, which they could not exceed anyway.
	maxJSONBytes = 1 << 20
)

// Action says what a command asks of a producer.
type Action string

// Actions. A stop is a command like any other so that the last value of a
// subject is always the truth about that (node, capture).
const (
	// ActionCapture asks the producer to capture on the listed endpoints,
	// replacing whatever it captured for this capture before.
	ActionCapture Action = "capture"
	// ActionStop asks the producer to stop capturing for this capture.
	ActionStop Action = "stop"
)

// Command is the whole desired state of one capture on one node, published
// by the router on CommandSubject. Because it is complete rather than a
// delta, the last message per subject is enough to rebuild a producer.
type Command struct {
	// Version is the format version. EncodeCommand always writes Version.
	Version int `json:"version"`
	// Action is ActionCapture or ActionStop.
	Action Action `json:"action"`
	// Namespace is the PacketCapture's namespace.
	Namespace string `json:"namespace"`
	// Name is the PacketCapture's name.
	Name string `json:"name"`
	// UID is the PacketCapture's UID; it tells a recreated capture of the
	// same name apart from the old one, and seeds batch message IDs.
	UID string `json:"uid"`
	// Generation is the PacketCapture's metadata.generation the command was
	// computed from, so status can say which spec it reflects.
	Generation int64 `json:"generation"`
	// Node is the node the command is for; it matches the subject.
	Node string `json:"node"`
	// Endpoints are the workload endpoints on Node to capture on.
	Endpoints []Endpoint `json:"endpoints,omitempty"`
	// Filters are OR'ed rules; none means all traffic.
	Filters []Filter `json:"filters,omitempty"`
	// SnapLength is the bytes kept per packet; 0 means MaxSnapLength.
	SnapLength int `json:"snapLength,omitempty"`
	// StartTime is when to start; nil or past means now.
	StartTime *time.Time `json:"startTime,omitempty"`
	// EndTime is when to stop; nil means until stopped.
	EndTime *time.Time `json:"endTime,omitempty"`
	// IssuedAt is when the router computed the command, for lag metrics.
	IssuedAt time.Time `json:"issuedAt"`
}

// Endpoint is one workload endpoint: a pod and the host-side interface its
// traffic is captured on.
type Endpoint struct {
	// Pod is the pod's name.
	Pod string `json:"pod"`
	// Namespace is the pod's namespace.
	Namespace string `json:"namespace"`
	// Interface is the host-side interface (e.g. the Calico veth).
	Interface string `json:"interface"`
	// Labels are the workload endpoint's labels as the selector saw them,
	// carried so sinks can enrich records without asking the API server.
	Labels map[string]string `json:"labels,omitempty"`
}

// Filter is one capture rule: protocol AND any of the ports.
type Filter struct {
	// Protocol is a name (TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite, any case)
	// or a number 0-255, as in the PacketCapture spec; empty means any.
	// See ParseProtocol.
	Protocol string `json:"protocol,omitempty"`
	// Ports are numbers or "lo:hi" ranges, OR'ed; empty means any. Ports
	// only make sense for TCP, UDP, SCTP and UDPLite, so they are rejected
	// with another protocol; with no protocol they match any of those four.
	// See ParsePortRange.
	Ports []string `json:"ports,omitempty"`
}

// EncodeCommand validates c and encodes it as JSON with the current
// Version. Validating here means the router cannot publish a command that
// every producer would reject. c is not modified.
func EncodeCommand(c *Command) ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("encode command: %w", err)
	}
	cp := *c
	cp.Version = Version
	b, err := json.Marshal(&cp)
	if err != nil {
		return nil, fmt.Errorf("encode command: %w", err)
	}
	return b, nil
}

// DecodeCommand decodes and validates a command. Errors wrap
// ErrUnknownVersion for another format version and ErrMalformed for
// anything else wrong with b. Unknown JSON fields are ignored (see the
// package comment on compatibility).
func DecodeCommand(b []byte) (*Command, error) {
	var c Command
	if err := decodeJSON(b, &c, &c.Version); err != nil {
		return nil, fmt.Errorf("decode command: %w", err)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("decode command: %w", err)
	}
	return &c, nil
}

// decodeJSON unmarshals b into v and checks the version it finds in
// *version. When the body does not fit v, it probes for the version alone so
// that a future format with different field types is reported as
// ErrUnknownVersion rather than as malformed.
func decodeJSON(b []byte, v any, version *int) error {
	if len(b) > maxJSONBytes {
		return fmt.Errorf("%w: %d bytes, more than %d", ErrMalformed, len(b), maxJSONBytes)
	}
	if err := json.Unmarshal(b, v); err != nil {
		var probe struct {
			Version *int `json:"version"`
		}
		if json.Unmarshal(b, &probe) == nil && probe.Version != nil && *probe.Version != Version {
			return fmt.Errorf("%w %d, want %d", ErrUnknownVersion, *probe.Version, Version)
		}
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if *version != Version {
		return fmt.Errorf("%w %d, want %d", ErrUnknownVersion, *version, Version)
	}
	return nil
}

// Validate checks every rule a producer relies on, except Version (which
// EncodeCommand sets and DecodeCommand checks first). Errors wrap
// ErrMalformed, and ErrInvalidName for a bad name.
func (c *Command) Validate() error {
	if c == nil {
		return fmt.Errorf("%w: nil command", ErrMalformed)
	}
	switch c.Action {
	case ActionCapture, ActionStop:
	default:
		return fmt.Errorf("%w: action %s: want %q or %q", ErrMalformed, quote(string(c.Action)), ActionCapture, ActionStop)
	}
	if err := checkKey(c.Namespace, c.Name, c.Node); err != nil {
		return err
	}
	if err := checkUID(c.UID); err != nil {
		return err
	}
	if c.Generation < 0 {
		return fmt.Errorf("%w: generation %d is negative", ErrMalformed, c.Generation)
	}
	if len(c.Endpoints) > MaxEndpoints {
		return fmt.Errorf("%w: %d endpoints, more than %d", ErrMalformed, len(c.Endpoints), MaxEndpoints)
	}
	for i := range c.Endpoints {
		if err := c.Endpoints[i].validate(); err != nil {
			return fmt.Errorf("endpoint %d: %w", i, err)
		}
	}
	if len(c.Filters) > MaxFilters {
		return fmt.Errorf("%w: %d filters, more than %d", ErrMalformed, len(c.Filters), MaxFilters)
	}
	for i := range c.Filters {
		if err := c.Filters[i].validate(); err != nil {
			return fmt.Errorf("filter %d: %w", i, err)
		}
	}
	if c.SnapLength < 0 || c.SnapLength > MaxSnapLength {
		return fmt.Errorf("%w: snap length %d: want 0 to %d", ErrMalformed, c.SnapLength, MaxSnapLength)
	}
	if c.IssuedAt.IsZero() {
		return fmt.Errorf("%w: issued at is zero", ErrMalformed)
	}
	// An end before the start is accepted: it is a capture that never runs,
	// and judging the spec is the router's job, not the wire format's.
	return nil
}

// checkKey validates the three names every message is keyed by.
func checkKey(namespace, name, node string) error {
	if err := checkName(namespace); err != nil {
		return fmt.Errorf("%w: namespace: %w", ErrMalformed, err)
	}
	if err := checkName(name); err != nil {
		return fmt.Errorf("%w: name: %w", ErrMalformed, err)
	}
	if err := checkName(node); err != nil {
		return fmt.Errorf("%w: node: %w", ErrMalformed, err)
	}
	return nil
}

// checkUID accepts what Kubernetes generates (UUIDs) and anything else made
// of letters, digits and '-': the UID ends up in Nats-Msg-Id headers, which
// must not contain separators or whitespace.
func checkUID(uid string) error {
	if uid == "" || len(uid) > maxUIDLength {
		return fmt.Errorf("%w: uid %s: want 1 to %d bytes", ErrMalformed, quote(uid), maxUIDLength)
	}
	for i := 0; i < len(uid); i++ {
		if c := uid[i]; !isAlnum(c) && c != '-' {
			return fmt.Errorf("%w: uid %s: byte %d is %q", ErrMalformed, quote(uid), i, c)
		}
	}
	return nil
}

func (e *Endpoint) validate() error {
	if err := checkName(e.Pod); err != nil {
		return fmt.Errorf("%w: pod: %w", ErrMalformed, err)
	}
	if err := checkName(e.Namespace); err != nil {
		return fmt.Errorf("%w: namespace: %w", ErrMalformed, err)
	}
	if err := CheckInterface(e.Interface); err != nil {
		return err
	}
	if len(e.Labels) > MaxLabels {
		return fmt.Errorf("%w: %d labels, more than %d", ErrMalformed, len(e.Labels), MaxLabels)
	}
	for k, v := range e.Labels {
		if k == "" || len(k) > maxLabelBytes || len(v) > maxLabelBytes {
			return fmt.Errorf("%w: label %s: key must be 1 to %d bytes and value at most %d", ErrMalformed, quote(k), maxLabelBytes, maxLabelBytes)
		}
	}
	return nil
}

// CheckInterface reports whether name is a valid Linux interface name, the
// rules of the kernel's dev_valid_name: 1 to 15 bytes, not "." or "..", no
// '/', ':' or whitespace. Capstream also requires printable ASCII because the
// name travels in NATS headers and object keys. Errors wrap ErrMalformed.
func CheckInterface(name string) error {
	if name == "" || len(name) > MaxInterfaceLength || name == "." || name == ".." {
		return fmt.Errorf("%w: interface %s: want 1 to %d bytes, not \".\" or \"..\"", ErrMalformed, quote(name), MaxInterfaceLength)
	}
	for i := 0; i < len(name); i++ {
		// '!' .. '~' is printable ASCII without space.
		if c := name[i]; c < '!' || c > '~' || c == '/' || c == ':' {
			return fmt.Errorf("%w: interface %s: byte %d is %q", ErrMalformed, quote(name), i, c)
		}
	}
	return nil
}

func (f *Filter) validate() error {
	proto := -1
	if f.Protocol != "" {
		p, err := ParseProtocol(f.Protocol)
		if err != nil {
			return err
		}
		proto = int(p)
	}
	if len(f.Ports) > MaxPorts {
		return fmt.Errorf("%w: %d ports, more than %d", ErrMalformed, len(f.Ports), MaxPorts)
	}
	if len(f.Ports) > 0 && proto >= 0 && !ProtocolHasPorts(uint8(proto)) {
		return fmt.Errorf("%w: ports with protocol %s, which has no ports", ErrMalformed, quote(f.Protocol))
	}
	for _, p := range f.Ports {
		if _, _, err := ParsePortRange(p); err != nil {
			return err
		}
	}
	return nil
}

// IP protocol numbers of the protocols the PacketCapture spec names.
const (
	ProtocolICMP    uint8 = 1
	ProtocolTCP     uint8 = 6
	ProtocolUDP     uint8 = 17
	ProtocolICMPv6  uint8 = 58
	ProtocolSCTP    uint8 = 132
	ProtocolUDPLite uint8 = 136
)

var protocolNames = map[string]uint8{
	"icmp":    ProtocolICMP,
	"tcp":     ProtocolTCP,
	"udp":     ProtocolUDP,
	"icmpv6":  ProtocolICMPv6,
	"sctp":    ProtocolSCTP,
	"udplite": ProtocolUDPLite,
}

// ProtocolHasPorts reports whether the protocol's header starts with 16-bit source
// and destination ports, which is what a port filter compiles to.
func ProtocolHasPorts(p uint8) bool {
	switch p {
	case ProtocolTCP, ProtocolUDP, ProtocolSCTP, ProtocolUDPLite:
		return true
	}
	return false
}

// ParseProtocol parses a PacketCapture filter protocol: one of TCP, UDP,
// ICMP, ICMPv6, SCTP, UDPLite in any letter case, or a decimal IP protocol
// number 0-255. Errors wrap ErrMalformed.
func ParseProtocol(s string) (uint8, error) {
	if s != "" && s[0] >= '0' && s[0] <= '9' {
		n, ok := parseDecimal(s, 255)
		if !ok {
			return 0, fmt.Errorf("%w: protocol %s: want a name or 0 to 255", ErrMalformed, quote(s))
		}
		return uint8(n), nil
	}
	if len(s) <= len("udplite") {
		if p, ok := protocolNames[strings.ToLower(s)]; ok {
			return p, nil
		}
	}
	return 0, fmt.Errorf("%w: protocol %s: want TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or 0 to 255", ErrMalformed, quote(s))
}

// ParsePortRange parses a PacketCapture port: "80" or "lo:hi" with
// lo <= hi, each 0-65535. A single port returns lo == hi. Errors wrap
// ErrMalformed.
func ParsePortRange(s string) (lo, hi uint16, err error) {
	a, b, isRange := strings.Cut(s, ":")
	l, ok := parseDecimal(a, 65535)
	h := l
	if ok && isRange {
		h, ok = parseDecimal(b, 65535)
	}
	if !ok {
		return 0, 0, fmt.Errorf("%w: port %s: want 0 to 65535 or lo:hi", ErrMalformed, quote(s))
	}
	if l > h {
		return 0, 0, fmt.Errorf("%w: port range %s: low end above high end", ErrMalformed, quote(s))
	}
	return uint16(l), uint16(h), nil
}

// parseDecimal parses plain ASCII digits up to max. Unlike strconv it
// rejects signs, and it bounds the length so a long run of zeros is refused
// rather than scanned.
func parseDecimal(s string, max uint64) (uint64, bool) {
	if s == "" || len(s) > 20 {
		return 0, false
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
		if n > max {
			return 0, false
		}
	}
	return n, true
}
