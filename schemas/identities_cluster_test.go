package schemas

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// subjectMatch reports whether a NATS subject matches a permission
// pattern, token by token: '*' matches one token, a final '>' one or more.
func subjectMatch(pattern, subject string) bool {
	p, s := strings.Split(pattern, "."), strings.Split(subject, ".")
	for i, tok := range p {
		if tok == ">" {
			return i == len(p)-1 && len(s) > i
		}
		if i >= len(s) || tok != "*" && tok != s[i] {
			return false
		}
	}
	return len(p) == len(s)
}

// validPattern is the server's rule for a subject with wildcards:
// non-empty tokens without whitespace, '*' and '>' only as whole tokens,
// '>' only last.
func validPattern(s string) bool {
	tokens := strings.Split(s, ".")
	for i, tok := range tokens {
		switch {
		case tok == "" || strings.ContainsAny(tok, " \t\r\n"):
			return false
		case tok == ">" && i != len(tokens)-1:
			return false
		case tok != "*" && tok != ">" && strings.ContainsAny(tok, "*>"):
			return false
		}
	}
	return true
}

func TestClusterProducerIdentity(t *testing.T) {
	id := ClusterProducerIdentity()
	want := Identity{
		User: "capstream-producer",
		Publish: []string{
			"capstream.pkt.*.*.*",
			"capstream.status.*.*.*",
			"$JS.API.CONSUMER.CREATE.CAPSTREAM_COMMANDS.*.capstream.cmd.*.>",
			"$JS.API.CONSUMER.MSG.NEXT.CAPSTREAM_COMMANDS.*",
			"$JS.API.CONSUMER.INFO.CAPSTREAM_COMMANDS.*",
			"$JS.API.CONSUMER.DELETE.CAPSTREAM_COMMANDS.*",
			"$JS.API.DIRECT.GET.CAPSTREAM_COMMANDS.capstream.cmd.*.>",
			"$JS.API.STREAM.INFO.CAPSTREAM_COMMANDS",
		},
		Subscribe:   []string{"_INBOX_capstream-producer.>"},
		InboxPrefix: "_INBOX_capstream-producer",
	}
	if d := cmp.Diff(want, id); d != "" {
		t.Fatalf("ClusterProducerIdentity (-want +got):\n%s", d)
	}
	for _, p := range append(append([]string{}, id.Publish...), id.Subscribe...) {
		if !validPattern(p) {
			t.Errorf("%q: not a valid subject pattern", p)
		}
	}

	// It is one node's identity with the node generalised, nothing more:
	// each pattern covers the per-node one, and putting a node back in
	// place of the wildcards that stand for it gives the per-node one.
	for _, node := range []string{"worker-1", "worker-1.example.com"} {
		per, err := ProducerIdentity(node)
		if err != nil {
			t.Fatal(err)
		}
		tok, _ := Token(node)
		if len(per.Publish) != len(id.Publish) {
			t.Fatalf("%d patterns, the per-node identity has %d", len(id.Publish), len(per.Publish))
		}
		for i, p := range id.Publish {
			if !subjectMatch(p, per.Publish[i]) {
				t.Errorf("%q does not cover %s's %q", p, node, per.Publish[i])
			}
			nt := strings.Split(p, ".")
			pt := strings.Split(per.Publish[i], ".")
			if len(nt) != len(pt) {
				t.Errorf("%q and %q: different lengths", p, per.Publish[i])
				continue
			}
			for j := range nt {
				if nt[j] != pt[j] && (nt[j] != "*" || pt[j] != tok) {
					t.Errorf("%q: token %d is %q, %s's is %q", p, j, nt[j], node, pt[j])
				}
			}
		}
	}

	mustSubject := func(s string, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	allowed := func(s string) bool {
		for _, p := range id.Publish {
			if subjectMatch(p, s) {
				return true
			}
		}
		return false
	}
	cases := map[string]struct {
		subject string
		want    bool
	}{
		"batch of node a":                {mustSubject(PacketSubject("team-a", "cap", "node-a")), true},
		"batch of node b":                {mustSubject(PacketSubject("team-b", "cap", "node-b.example.com")), true},
		"report of node b":               {mustSubject(StatusSubject("team-b", "cap", "node-b")), true},
		"ordered consumer on node b":     {"$JS.API.CONSUMER.CREATE.CAPSTREAM_COMMANDS.oc1." + mustSubject(CommandFilterForNode("node-b")), true},
		"command":                        {mustSubject(CommandSubject("node-a", "team-a", "cap")), false},
		"unfiltered consumer":            {"$JS.API.CONSUMER.CREATE.CAPSTREAM_COMMANDS.oc1", false},
		"consumer filtered on batches":   {"$JS.API.CONSUMER.CREATE.CAPSTREAM_COMMANDS.oc1.capstream.pkt.a.b.c", false},
		"consumer on the packets stream": {"$JS.API.CONSUMER.CREATE.CAPSTREAM_PACKETS.oc1.capstream.pkt.a.b.c", false},
		"durable create":                 {"$JS.API.CONSUMER.DURABLE.CREATE.CAPSTREAM_COMMANDS.d", false},
		"pull a sink durable":            {"$JS.API.CONSUMER.MSG.NEXT.CAPSTREAM_PACKETS." + ConsumerPcapSink, false},
		"delete a sink durable":          {"$JS.API.CONSUMER.DELETE.CAPSTREAM_PACKETS." + ConsumerPcapSink, false},
		"stream create":                  {"$JS.API.STREAM.CREATE.CAPSTREAM_COMMANDS", false},
		"stream purge":                   {"$JS.API.STREAM.PURGE.CAPSTREAM_COMMANDS", false},
		"stream delete":                  {"$JS.API.STREAM.DELETE.CAPSTREAM_PACKETS", false},
		"read a batch by subject":        {"$JS.API.DIRECT.GET.CAPSTREAM_PACKETS.capstream.pkt.a.b.c", false},
		"ack a sink's message":           {"$JS.ACK.CAPSTREAM_PACKETS." + ConsumerPcapSink + ".1.1.1.1.1", false},
		"short batch subject":            {"capstream.pkt.a.b", false},
		"long batch subject":             {"capstream.pkt.a.b.c.d", false},
		"another inbox":                  {"_INBOX_capstream-router.x", false},
	}
	for name, tc := range cases {
		if got := allowed(tc.subject); got != tc.want {
			t.Errorf("%s: publish %s allowed = %v, want %v", name, tc.subject, got, tc.want)
		}
	}
	for _, s := range []string{PacketSubjectsAll, CommandSubjectsAll, StatusSubjectsAll, "_INBOX_capstream-producer-node-a.x", "_INBOX.x"} {
		for _, p := range id.Subscribe {
			if subjectMatch(p, strings.TrimSuffix(s, ".>")+".x") {
				t.Errorf("subscribe %q covers %s", p, s)
			}
		}
	}
}
