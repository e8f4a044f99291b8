package schemas

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var (
	name253 = strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 61)
	name254 = name253 + "e"
)

func TestToken(t *testing.T) {
	valid := map[string]struct {
		name, token string
	}{
		"plain":       {"default", "default"},
		"dots":        {"my.capture.v1", "my_capture_v1"},
		"dash":        {"kube-system", "kube-system"},
		"digits":      {"0", "0"},
		"253 bytes":   {name253, strings.ReplaceAll(name253, ".", "_")},
		"single char": {"x", "x"},
		"dash inside": {"a-b.c-d", "a-b_c-d"},
	}
	for name, tc := range valid {
		t.Run(name, func(t *testing.T) {
			got, err := Token(tc.name)
			if err != nil {
				t.Fatalf("Token(%q): %v", tc.name, err)
			}
			if diff := cmp.Diff(tc.token, got); diff != "" {
				t.Errorf("Token(%q) (-want +got):\n%s", tc.name, diff)
			}
			back, err := Name(got)
			if err != nil {
				t.Fatalf("Name(%q): %v", got, err)
			}
			if diff := cmp.Diff(tc.name, back); diff != "" {
				t.Errorf("Name(Token(%q)) (-want +got):\n%s", tc.name, diff)
			}
		})
	}

	invalid := map[string]string{
		"empty":       "",
		"underscore":  "a_b",
		"star":        "a*",
		"gt":          ">",
		"space":       "a b",
		"tab":         "a\tb",
		"newline":     "a\nb",
		"nul":         "a\x00b",
		"del":         "a\x7fb",
		"unicode":     "café",
		"slash":       "a/b",
		"colon":       "a:b",
		"254 bytes":   name254,
		"huge":        strings.Repeat("a", 1<<20),
		"invalid utf": "a\xffb",
		// Names Kubernetes never makes: they would become odd subjects
		// and object keys ("..", ".").
		"upper case":     "NODE-1.Example.COM",
		"leading dot":    ".a",
		"trailing dot":   "a.",
		"double dot":     "a..b",
		"only dots":      "...",
		"one dot":        ".",
		"leading dash":   "-a",
		"trailing dash":  "a-",
		"dash and dot":   "-.-",
		"label 64 bytes": strings.Repeat("a", 64),
	}
	t.Run("invalid", func(t *testing.T) { refuses(t, "Token", Token, ErrInvalidName, invalid) })
}

// refuses checks fn refuses every input with an error that wraps want.
func refuses[V any](t *testing.T, fname string, fn func(string) (V, error), want error, invalid map[string]string) {
	t.Helper()
	for name, in := range invalid {
		t.Run(name, func(t *testing.T) {
			if got, err := fn(in); !errors.Is(err, want) {
				t.Errorf("%s(%q) = %#v, %v; want %v", fname, in, got, err, want)
			}
		})
	}
}

func TestName(t *testing.T) {
	invalid := map[string]string{
		"empty":     "",
		"dot":       "a.b",
		"star":      "*",
		"gt":        ">",
		"space":     " ",
		"unicode":   "ü",
		"254 bytes": strings.Repeat("a", 254),
	}
	refuses(t, "Name", Name, ErrInvalidName, invalid)
}

func TestSubjects(t *testing.T) {
	key := Key{Namespace: "prod.eu", Name: "cap.1", Node: "node-7.internal"}
	tests := map[string]struct {
		build func() (string, error)
		parse func(string) (Key, error)
		want  string
	}{
		"command": {
			build: func() (string, error) { return CommandSubject(key.Node, key.Namespace, key.Name) },
			parse: ParseCommandSubject,
			want:  "capstream.cmd.node-7_internal.prod_eu.cap_1",
		},
		"packet": {
			build: func() (string, error) { return PacketSubject(key.Namespace, key.Name, key.Node) },
			parse: ParsePacketSubject,
			want:  "capstream.pkt.prod_eu.cap_1.node-7_internal",
		},
		"status": {
			build: func() (string, error) { return StatusSubject(key.Namespace, key.Name, key.Node) },
			parse: parseStatusKey(SourceProducer),
			want:  "capstream.status.prod_eu.cap_1.node-7_internal",
		},
		"pcap sink report": {
			build: func() (string, error) {
				return ReportSubject(&Status{Source: SourcePcapSink, Namespace: key.Namespace, Name: key.Name, Node: key.Node})
			},
			parse: parseStatusKey(SourcePcapSink),
			want:  "capstream.status.prod_eu.cap_1.node-7_internal.sink-pcap",
		},
		"flow sink report": {
			build: func() (string, error) {
				return ReportSubject(&Status{Source: SourceFlowSink, Namespace: key.Namespace, Name: key.Name, Node: key.Node})
			},
			parse: parseStatusKey(SourceFlowSink),
			want:  "capstream.status.prod_eu.cap_1.node-7_internal.sink-flows",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := tc.build()
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("subject (-want +got):\n%s", diff)
			}
			back, err := tc.parse(got)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(key, back); diff != "" {
				t.Errorf("parsed key (-want +got):\n%s", diff)
			}
		})
	}

	filter, err := CommandFilterForNode("node.a")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff("capstream.cmd.node_a.>", filter); diff != "" {
		t.Errorf("CommandFilterForNode (-want +got):\n%s", diff)
	}
	for _, bad := range []string{"", "a_b", "*", ">", "a b"} {
		if _, err := CommandFilterForNode(bad); !errors.Is(err, ErrInvalidName) {
			t.Errorf("CommandFilterForNode(%q): %v, want ErrInvalidName", bad, err)
		}
		if _, err := CommandSubject(bad, "ns", "n"); !errors.Is(err, ErrInvalidName) {
			t.Errorf("CommandSubject(%q, ...): %v, want ErrInvalidName", bad, err)
		}
		if _, err := PacketSubject("ns", bad, "node"); !errors.Is(err, ErrInvalidName) {
			t.Errorf("PacketSubject(_, %q, _): %v, want ErrInvalidName", bad, err)
		}
		if _, err := StatusSubject("ns", "n", bad); !errors.Is(err, ErrInvalidName) {
			t.Errorf("StatusSubject(_, _, %q): %v, want ErrInvalidName", bad, err)
		}
	}
}

func TestParseSubjectInvalid(t *testing.T) {
	invalid := map[string]string{
		"empty":          "",
		"other prefix":   "capstream.status.ns.name.node",
		"no prefix":      "foo.pkt.ns.name.node",
		"too few":        "capstream.pkt.ns.name",
		"too many":       "capstream.pkt.ns.name.node.extra",
		"empty token":    "capstream.pkt.ns..node",
		"trailing dot":   "capstream.pkt.ns.name.node.",
		"wildcard":       "capstream.pkt.ns.*.node",
		"full wildcard":  "capstream.pkt.>",
		"tail wildcard":  "capstream.pkt.ns.name.>",
		"space":          "capstream.pkt.ns.na me.node",
		"unicode":        "capstream.pkt.ns.nämé.node",
		"long token":     "capstream.pkt.ns." + strings.Repeat("a", 254) + ".node",
		"prefix only":    "capstream.pkt.",
		"upper prefix":   "CAPSTREAM.pkt.ns.name.node",
		"dot in token":   "capstream.pkt.ns.a.b.node",
		"leading spaces": " capstream.pkt.ns.name.node",
	}
	refuses(t, "ParsePacketSubject", ParsePacketSubject, ErrInvalidSubject, invalid)
}

func FuzzToken(f *testing.F) {
	for _, s := range []string{"default", "a.b.c", "Node-1", "a_b", "*", ">", "", name253, "é",
		"..", ".", "-a", "a..b", strings.Repeat("a", 64), // names Kubernetes never makes, once accepted
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if tok, err := Token(s); err == nil {
			if strings.ContainsAny(tok, ".*> \t\r\n") || tok == "" {
				t.Fatalf("Token(%q) = %q is not a single plain token", s, tok)
			}
			back, err := Name(tok)
			if err != nil {
				t.Fatalf("Name(Token(%q)=%q): %v", s, tok, err)
			}
			if back != s {
				t.Fatalf("Name(Token(%q)) = %q", s, back)
			}
		}
		if name, err := Name(s); err == nil {
			tok, err := Token(name)
			if err != nil {
				t.Fatalf("Token(Name(%q)=%q): %v", s, name, err)
			}
			if tok != s {
				t.Fatalf("Token(Name(%q)) = %q", s, tok)
			}
		}
	})
}

func FuzzParseSubject(f *testing.F) {
	for _, s := range []string{
		"capstream.cmd.node_1.ns.name",
		"capstream.pkt.ns.name.node",
		"capstream.status.ns.a_b.node",
		"capstream.pkt.ns.name.node.x",
		"capstream.pkt.ns.name.node.7",
		"capstream.pkt.>",
	} {
		f.Add(s)
	}
	parsers := []struct {
		parse func(string) (Key, error)
		build func(Key) (string, error)
	}{
		{ParseCommandSubject, func(k Key) (string, error) { return CommandSubject(k.Node, k.Namespace, k.Name) }},
		{ParsePacketSubject, func(k Key) (string, error) { return PacketSubject(k.Namespace, k.Name, k.Node) }},
		{parseStatusKey(SourceProducer), func(k Key) (string, error) { return StatusSubject(k.Namespace, k.Name, k.Node) }},
		{parseStatusKey(SourcePcapSink), func(k Key) (string, error) {
			return ReportSubject(&Status{Source: SourcePcapSink, Namespace: k.Namespace, Name: k.Name, Node: k.Node})
		}},
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, p := range parsers {
			k, err := p.parse(s)
			if err != nil {
				continue
			}
			back, err := p.build(k)
			if err != nil {
				t.Fatalf("parsed %q to %+v, which does not build: %v", s, k, err)
			}
			want := s
			if strings.HasPrefix(s, packetPrefix) && strings.Count(s, ".") == strings.Count(packetPrefix, ".")+3 {
				want = s[:strings.LastIndexByte(s, '.')] // the partition the stream appends
			}
			if back != want {
				t.Fatalf("parsed %q to %+v, which builds %q", s, k, back)
			}
		}
	})
}

// parseStatusKey is ParseStatusSubject for subjects of source want only.
func parseStatusKey(want Source) func(string) (Key, error) {
	return func(subj string) (Key, error) {
		k, src, err := ParseStatusSubject(subj)
		if err == nil && src != want {
			err = fmt.Errorf("source %s, want %s", src, want)
		}
		return k, err
	}
}

func TestReportSubjectSources(t *testing.T) {
	if _, err := ReportSubject(&Status{Source: "sink-other", Namespace: "a", Name: "b", Node: "c"}); err == nil {
		t.Error("a report subject for an unknown source")
	}
	for _, subj := range []string{"capstream.status.a.b.c.producer", "capstream.status.a.b.c.sink-x", "capstream.status.a.b.c.d.e", "capstream.status.a.b"} {
		if k, src, err := ParseStatusSubject(subj); err == nil {
			t.Errorf("%s parsed to %+v %s", subj, k, src)
		}
	}
}
