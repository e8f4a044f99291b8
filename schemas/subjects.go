package schemas

import (
	"fmt"
	"strconv"
	"strings"
)

// Subject prefixes and the wildcards that cover each family. The first token
// is a fixed namespace so capstream can share a NATS account with other
// applications; the second names the family, which maps one to one to a
// stream.
const (
	// CommandSubjectsAll matches every command subject. Commands are keyed
	// node first so that a producer filters on its own node with one
	// wildcard; there is consequently no per-capture filter.
	CommandSubjectsAll = "capstream.cmd.>"
	// PacketSubjectsAll matches every packet batch subject.
	PacketSubjectsAll = "capstream.pkt.>"
	// StatusSubjectsAll matches every status subject.
	StatusSubjectsAll = "capstream.status.>"

	commandPrefix = "capstream.cmd."
	packetPrefix  = "capstream.pkt."
	statusPrefix  = "capstream.status."
)

// Stream names. They are fixed rather than configurable because every
// process must agree on them and a mismatch would silently split the data.
const (
	// StreamCommands holds the desired state per (node, capture).
	StreamCommands = "CAPSTREAM_COMMANDS"
	// StreamPackets holds packet batches until both sinks have acked them.
	StreamPackets = "CAPSTREAM_PACKETS"
	// StreamStatus holds recent status reports from producers and sinks.
	StreamStatus = "CAPSTREAM_STATUS"
)

// MaxNameLength is the longest Kubernetes object name (a DNS subdomain).
const MaxNameLength = 253

// Key identifies one capture on one node: the unit that commands, batches
// and status reports are keyed by. The parsers return it instead of three
// strings because the subjects do not list the parts in the same order.
type Key struct {
	// Namespace is the capture's namespace.
	Namespace string
	// Name is the PacketCapture's name.
	Name string
	// Node is the Kubernetes node name.
	Node string
}

// Token maps a Kubernetes name to a single NATS subject token. Kubernetes
// names may contain '.', the NATS token separator, but never '_', so '.'
// becomes '_' and the mapping is reversible by [Name].
//
// Token accepts DNS-1123 subdomains, the form of every Kubernetes name it
// is given (pods, nodes, namespaces, captures): lowercase letters, digits,
// '-' and '.', in labels of 1 to 63 bytes that start and end with a letter
// or digit, up to [MaxNameLength] bytes. Anything else, including the
// wildcards '*' and '>', whitespace, upper case, "." and "..", could either
// not come from Kubernetes or would change the meaning of a subject or an
// object key, so it is an error wrapping [ErrInvalidName].
func Token(name string) (string, error) {
	if err := checkName(name); err != nil {
		return "", err
	}
	if strings.IndexByte(name, '.') < 0 {
		return name, nil // the common case needs no copy
	}
	return strings.ReplaceAll(name, ".", "_"), nil
}

// Name reverses [Token]: '_' becomes '.'. It rejects tokens that Token could
// not have produced, so a subject injected by someone else cannot smuggle an
// invalid name into the system.
func Name(token string) (string, error) {
	if err := checkToken(token); err != nil {
		return "", err
	}
	if strings.IndexByte(token, '_') < 0 {
		return token, nil
	}
	return strings.ReplaceAll(token, "_", "."), nil
}

// checkName validates a Kubernetes name as accepted by Token: a DNS-1123
// subdomain, which is what names of pods, nodes, namespaces and captures
// all are: lowercase letters, digits, '-' and '.', at most MaxNameLength
// bytes, in labels of 1 to 63 bytes separated by '.', each starting and
// ending with a letter or digit. Anything else ("..", ".", "-a", upper
// case) was never made by Kubernetes and is refused.
func checkName(name string) error {
	return checkLabels(name, '.', "")
}

// checkToken validates a subject token as produced by Token: a name with
// '.' written as '_'.
func checkToken(token string) error {
	return checkLabels(token, '_', "token ")
}

// checkLabels checks s as a DNS-1123 subdomain whose labels are separated
// by sep.
func checkLabels(s string, sep byte, what string) error {
	if err := checkNameLength(s); err != nil {
		return err
	}
	start := 0
	for i := 0; i <= len(s); i++ {
		if i < len(s) && s[i] != sep {
			if c := s[i]; !isLowerAlnum(c) && c != '-' {
				return fmt.Errorf("%w %s%s: byte %d is %q (want a-z, 0-9, '-' or %q)", ErrInvalidName, what, quote(s), i, c, sep)
			}
			continue
		}
		label := s[start:i]
		switch {
		case label == "":
			return fmt.Errorf("%w %s%s: empty label at byte %d", ErrInvalidName, what, quote(s), start)
		case len(label) > 63:
			return fmt.Errorf("%w %s%s: label at byte %d is %d bytes, longer than 63", ErrInvalidName, what, quote(s), start, len(label))
		case label[0] == '-' || label[len(label)-1] == '-':
			return fmt.Errorf("%w %s%s: label at byte %d starts or ends with '-'", ErrInvalidName, what, quote(s), start)
		}
		start = i + 1
	}
	return nil
}

func checkNameLength(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("%w: empty", ErrInvalidName)
	case len(s) > MaxNameLength:
		return fmt.Errorf("%w %s: %d bytes, longer than %d", ErrInvalidName, quote(s), len(s), MaxNameLength)
	}
	return nil
}

func isLowerAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || '0' <= c && c <= '9'
}

func isAlnum(c byte) bool { return isLowerAlnum(c) || 'A' <= c && c <= 'Z' }

// CommandSubject returns capstream.cmd.<node>.<namespace>.<name>, the subject
// that holds the desired state of one capture on one node.
func CommandSubject(node, namespace, name string) (string, error) {
	return subject(commandPrefix, node, namespace, name)
}

// PacketSubject returns capstream.pkt.<namespace>.<name>.<node>, the subject
// of the packet batches one node captures for one capture.
func PacketSubject(namespace, name, node string) (string, error) {
	return subject(packetPrefix, namespace, name, node)
}

// StatusSubject returns capstream.status.<namespace>.<name>.<node>, the
// subject on which the producer reports on one capture on its node.
func StatusSubject(namespace, name, node string) (string, error) {
	return subject(statusPrefix, namespace, name, node)
}

// ReportSubject returns the subject st is published on: the producer's
// StatusSubject, or for a sink that subject with the sink's source as a
// fourth token (capstream.status.<namespace>.<name>.<node>.sink-pcap).
// Each identity may publish only its own kind, so the router can trust a
// report's source: a producer cannot speak for a sink (schemas.Identity).
func ReportSubject(st *Status) (string, error) {
	subj, err := StatusSubject(st.Namespace, st.Name, st.Node)
	if err != nil {
		return "", err
	}
	switch st.Source {
	case SourceProducer:
		return subj, nil
	case SourcePcapSink, SourceFlowSink:
		return subj + "." + string(st.Source), nil
	}
	return "", fmt.Errorf("%w: no report subject for source %s", ErrMalformed, quote(string(st.Source)))
}

// CommandFilterForNode returns capstream.cmd.<node>.>, the filter a producer
// uses to receive the commands for its own node only.
func CommandFilterForNode(node string) (string, error) {
	t, err := Token(node)
	if err != nil {
		return "", fmt.Errorf("node: %w", err)
	}
	return commandPrefix + t + ".>", nil
}

// subject joins a prefix and three names mapped to tokens. The error names
// the position so a caller passing arguments in the wrong order notices.
func subject(prefix, a, b, c string) (string, error) {
	ta, err := Token(a)
	if err != nil {
		return "", fmt.Errorf("subject token 1: %w", err)
	}
	tb, err := Token(b)
	if err != nil {
		return "", fmt.Errorf("subject token 2: %w", err)
	}
	tc, err := Token(c)
	if err != nil {
		return "", fmt.Errorf("subject token 3: %w", err)
	}
	var sb strings.Builder
	sb.Grow(len(prefix) + len(ta) + len(tb) + len(tc) + 2)
	sb.WriteString(prefix)
	sb.WriteString(ta)
	sb.WriteByte('.')
	sb.WriteString(tb)
	sb.WriteByte('.')
	sb.WriteString(tc)
	return sb.String(), nil
}

// ParseCommandSubject parses capstream.cmd.<node>.<namespace>.<name>.
func ParseCommandSubject(subj string) (Key, error) {
	node, ns, name, err := parseSubject(commandPrefix, subj)
	if err != nil {
		return Key{}, err
	}
	return Key{Namespace: ns, Name: name, Node: node}, nil
}

// ParsePacketSubject parses capstream.pkt.<namespace>.<name>.<node>, as a
// producer publishes it, or as the packets stream stores it, with the
// partition number as a fourth token (PacketsTransform); the partition is
// not part of the key.
func ParsePacketSubject(subj string) (Key, error) {
	if strings.Count(subj, ".") == strings.Count(packetPrefix, ".")+3 {
		i := strings.LastIndexByte(subj, '.')
		if p, err := strconv.Atoi(subj[i+1:]); err != nil || p < 0 || p >= MaxPacketPartitions || strconv.Itoa(p) != subj[i+1:] {
			return Key{}, fmt.Errorf("%w %s: partition token %s: want 0 to %d", ErrInvalidSubject, quote(subj), quote(subj[i+1:]), MaxPacketPartitions-1)
		}
		subj = subj[:i]
	}
	ns, name, node, err := parseSubject(packetPrefix, subj)
	if err != nil {
		return Key{}, err
	}
	return Key{Namespace: ns, Name: name, Node: node}, nil
}

// ParseStatusSubject parses a ReportSubject: the key, and the source the
// subject is reserved for (SourceProducer for three tokens).
func ParseStatusSubject(subj string) (Key, Source, error) {
	src := SourceProducer
	if strings.Count(subj, ".") == strings.Count(statusPrefix, ".")+3 {
		i := strings.LastIndexByte(subj, '.')
		src = Source(subj[i+1:])
		if src != SourcePcapSink && src != SourceFlowSink {
			return Key{}, "", fmt.Errorf("%w %s: unknown source %s", ErrInvalidSubject, quote(subj), quote(string(src)))
		}
		subj = subj[:i]
	}
	ns, name, node, err := parseSubject(statusPrefix, subj)
	if err != nil {
		return Key{}, "", err
	}
	return Key{Namespace: ns, Name: name, Node: node}, src, nil
}

// parseSubject splits prefix + exactly three tokens and maps them back to
// names. Errors wrap ErrInvalidSubject and, for a bad token, ErrInvalidName.
func parseSubject(prefix, subj string) (a, b, c string, err error) {
	rest, ok := strings.CutPrefix(subj, prefix)
	if !ok {
		return "", "", "", fmt.Errorf("%w %s: want prefix %q", ErrInvalidSubject, quote(subj), prefix)
	}
	var toks [3]string
	for i := range toks {
		if i < len(toks)-1 {
			tok, after, found := strings.Cut(rest, ".")
			if !found {
				return "", "", "", fmt.Errorf("%w %s: want %d tokens after %q", ErrInvalidSubject, quote(subj), len(toks), prefix)
			}
			toks[i], rest = tok, after
		} else {
			toks[i] = rest // a stray '.' here is caught by Name
		}
		if toks[i], err = Name(toks[i]); err != nil {
			return "", "", "", fmt.Errorf("%w %s: token %d: %w", ErrInvalidSubject, quote(subj), i+1, err)
		}
	}
	return toks[0], toks[1], toks[2], nil
}
