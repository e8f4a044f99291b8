package schemas

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func ptr[T any](v T) *T { return &v }

// validCommand returns a command that uses every field.
func validCommand() *Command {
	return &Command{
		Action:     ActionCapture,
		Namespace:  "prod",
		Name:       "web.capture",
		UID:        "6f1e2b1c-8d0a-4a57-9a43-3c9b7d2e1f00",
		Generation: 3,
		Node:       "node-1.example",
		Endpoints: []Endpoint{
			{Pod: "web-0", Namespace: "prod", Interface: "cali1234567890a", Labels: map[string]string{"app": "web", "projectcalico.org/namespace": "prod"}},
			{Pod: "web-1", Namespace: "prod", Interface: "cali0987654321b"},
		},
		Filters: []Filter{
			{Protocol: "TCP", Ports: []string{"80", "8000:8080"}},
			{Protocol: "icmp"},
			{Protocol: "17", Ports: []string{"53"}},
			{Ports: []string{"443"}},
		},
		SnapLength: 1500,
		StartTime:  ptr(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)),
		EndTime:    ptr(time.Date(2025, 1, 2, 4, 4, 5, 0, time.UTC)),
		IssuedAt:   time.Date(2025, 1, 2, 3, 0, 0, 123456789, time.UTC),
	}
}

func TestCommandRoundTrip(t *testing.T) {
	tests := map[string]func(c *Command){
		"full": func(*Command) {},
		"stop": func(c *Command) { c.Action = ActionStop; c.Endpoints = nil; c.Filters = nil },
		"minimal": func(c *Command) {
			*c = Command{Action: ActionCapture, Namespace: "a", Name: "b", Node: "c", UID: "u", IssuedAt: time.Unix(1, 0).UTC()}
		},
		"253-byte name": func(c *Command) { c.Name = name253 },
		"max snap":      func(c *Command) { c.SnapLength = MaxSnapLength },
		"end before start": func(c *Command) {
			c.StartTime, c.EndTime = c.EndTime, c.StartTime
		},
		"offset times": func(c *Command) {
			c.IssuedAt = time.Date(2025, 1, 2, 3, 0, 0, 0, time.FixedZone("x", 3600))
		},
	}
	for name, mutate := range tests {
		t.Run(name, func(t *testing.T) {
			c := validCommand()
			mutate(c)
			commandCodec.roundTrip(t, c)
		})
	}
}

// TestCommandJSON pins the field names: they are the contract with older
// and newer processes and what an operator reads in `nats sub`.
func TestCommandJSON(t *testing.T) {
	b, err := EncodeCommand(validCommand())
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range got {
		keys = append(keys, k)
	}
	want := []string{"action", "endTime", "endpoints", "filters", "generation", "issuedAt", "name", "namespace", "node", "snapLength", "startTime", "uid", "version"}
	if diff := cmp.Diff(want, keys, cmpopts.SortSlices(func(a, b string) bool { return a < b })); diff != "" {
		t.Errorf("JSON fields (-want +got):\n%s", diff)
	}
	ep := got["endpoints"].([]any)[0].(map[string]any)
	if _, ok := ep["interface"]; !ok {
		t.Errorf("endpoint JSON %v lacks \"interface\"", ep)
	}
	if got["version"] != float64(1) {
		t.Errorf("version = %v, want 1", got["version"])
	}
}

func TestDecodeCommandErrors(t *testing.T) {
	good, err := EncodeCommand(validCommand())
	if err != nil {
		t.Fatal(err)
	}
	edit := editor(t, good)
	endpoint := func(k string, v any) []byte {
		return edit(func(m map[string]any) { m["endpoints"].([]any)[0].(map[string]any)[k] = v })
	}
	filter := func(k string, v any) []byte {
		return edit(func(m map[string]any) { m["filters"].([]any)[0].(map[string]any)[k] = v })
	}
	many := func(n int, v any) []any {
		s := make([]any, n)
		for i := range s {
			s[i] = v
		}
		return s
	}
	commandCodec.decodeErrors(t, map[string]decodeCase{
		"empty":              {nil, ErrMalformed},
		"not json":           {[]byte("hello"), ErrMalformed},
		"truncated":          {good[:len(good)/2], ErrMalformed},
		"array":              {[]byte("[]"), ErrMalformed},
		"null":               {[]byte("null"), ErrUnknownVersion},
		"no version":         {edit(func(m map[string]any) { delete(m, "version") }), ErrUnknownVersion},
		"version 2":          {edit(func(m map[string]any) { m["version"] = 2 }), ErrUnknownVersion},
		"version 2 new type": {edit(func(m map[string]any) { m["version"] = 2; m["endpoints"] = "x" }), ErrUnknownVersion},
		"version string":     {edit(func(m map[string]any) { m["version"] = "1" }), ErrMalformed},
		"wrong type":         {edit(func(m map[string]any) { m["snapLength"] = "big" }), ErrMalformed},
		"bad action":         {edit(func(m map[string]any) { m["action"] = "pause" }), ErrMalformed},
		"no namespace":       {edit(func(m map[string]any) { delete(m, "namespace") }), ErrInvalidName},
		"name underscore":    {edit(func(m map[string]any) { m["name"] = "a_b" }), ErrInvalidName},
		"name wildcard":      {edit(func(m map[string]any) { m["name"] = "a>" }), ErrInvalidName},
		"name star":          {edit(func(m map[string]any) { m["name"] = "*" }), ErrInvalidName},
		"name space":         {edit(func(m map[string]any) { m["name"] = "a b" }), ErrInvalidName},
		"name unicode":       {edit(func(m map[string]any) { m["name"] = "ünï" }), ErrInvalidName},
		"name 254":           {edit(func(m map[string]any) { m["name"] = name254 }), ErrInvalidName},
		"node empty":         {edit(func(m map[string]any) { m["node"] = "" }), ErrInvalidName},
		"no uid":             {edit(func(m map[string]any) { delete(m, "uid") }), ErrMalformed},
		"uid colon":          {edit(func(m map[string]any) { m["uid"] = "a:b" }), ErrMalformed},
		"negative gen":       {edit(func(m map[string]any) { m["generation"] = -1 }), ErrMalformed},
		"no issued at":       {edit(func(m map[string]any) { delete(m, "issuedAt") }), ErrMalformed},
		"bad time":           {edit(func(m map[string]any) { m["startTime"] = "yesterday" }), ErrMalformed},
		"snap negative":      {edit(func(m map[string]any) { m["snapLength"] = -1 }), ErrMalformed},
		"snap too big":       {edit(func(m map[string]any) { m["snapLength"] = MaxSnapLength + 1 }), ErrMalformed},
		"too many endpoints": {edit(func(m map[string]any) { m["endpoints"] = many(MaxEndpoints+1, m["endpoints"].([]any)[1]) }), ErrMalformed},
		"too many filters":   {edit(func(m map[string]any) { m["filters"] = many(MaxFilters+1, map[string]any{}) }), ErrMalformed},
		"too many ports":     {filter("ports", many(MaxPorts+1, "80")), ErrMalformed},
		"pod underscore":     {endpoint("pod", "a_b"), ErrInvalidName},
		"endpoint ns empty":  {endpoint("namespace", ""), ErrInvalidName},
		"iface empty":        {endpoint("interface", ""), ErrMalformed},
		"iface 16 bytes":     {endpoint("interface", "cali1234567890ab"), ErrMalformed},
		"iface slash":        {endpoint("interface", "a/b"), ErrMalformed},
		"iface space":        {endpoint("interface", "a b"), ErrMalformed},
		"iface nul":          {endpoint("interface", "a\x00b"), ErrMalformed},
		"iface colon":        {endpoint("interface", "eth0:1"), ErrMalformed},
		"iface dotdot":       {endpoint("interface", ".."), ErrMalformed},
		"iface unicode":      {endpoint("interface", "éth0"), ErrMalformed},
		"empty label key":    {endpoint("labels", map[string]any{"": "x"}), ErrMalformed},
		"bad protocol":       {filter("protocol", "IGMPX"), ErrMalformed},
		"protocol 256":       {filter("protocol", "256"), ErrMalformed},
		"ports with icmp":    {filter("protocol", "ICMP"), ErrMalformed},
		"ports with 1":       {filter("protocol", "1"), ErrMalformed},
		"bad port":           {filter("ports", []any{"http"}), ErrMalformed},
		"port range upside":  {filter("ports", []any{"90:80"}), ErrMalformed},
		"port too big":       {filter("ports", []any{"65536"}), ErrMalformed},
		"huge":               {append(append([]byte(`{"version":1,"x":"`), bytes.Repeat([]byte("a"), maxJSONBytes)...), `"}`...), ErrMalformed},
	})
}

func TestDecodeCommandIgnoresUnknownFields(t *testing.T) {
	good, err := EncodeCommand(validCommand())
	if err != nil {
		t.Fatal(err)
	}
	b := append([]byte(`{"futureField":{"x":[1,2]},`), good[1:]...)
	got, err := DecodeCommand(b)
	if err != nil {
		t.Fatal(err)
	}
	want := validCommand()
	want.Version = Version
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestEncodeCommandValidates(t *testing.T) {
	c := validCommand()
	c.Node = "a_b"
	if _, err := EncodeCommand(c); !errors.Is(err, ErrInvalidName) {
		t.Errorf("EncodeCommand with node %q: %v, want ErrInvalidName", c.Node, err)
	}
	if _, err := EncodeCommand(nil); !errors.Is(err, ErrMalformed) {
		t.Errorf("EncodeCommand(nil): %v, want ErrMalformed", err)
	}
}

func TestParseProtocol(t *testing.T) {
	valid := map[string]uint8{
		"TCP": 6, "tcp": 6, "Udp": 17, "ICMP": 1, "ICMPv6": 58, "icmpv6": 58,
		"SCTP": 132, "UDPLite": 136, "udplite": 136, "0": 0, "255": 255, "47": 47, "006": 6,
	}
	for in, want := range valid {
		got, err := ParseProtocol(in)
		if err != nil {
			t.Errorf("ParseProtocol(%q): %v", in, err)
			continue
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("ParseProtocol(%q) (-want +got):\n%s", in, diff)
		}
	}
	for _, in := range []string{"", "256", "-1", "+6", " 6", "6 ", "tcp ", "IGMP", "0x6", "1e2", "tcpudp", strings.Repeat("9", 100), "ＴＣＰ"} {
		if got, err := ParseProtocol(in); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseProtocol(%q) = %d, %v; want ErrMalformed", in, got, err)
		}
	}
}

func TestParsePortRange(t *testing.T) {
	type rng struct{ Lo, Hi uint16 }
	valid := map[string]rng{
		"80": {80, 80}, "0": {0, 0}, "65535": {65535, 65535},
		"1000:2000": {1000, 2000}, "5:5": {5, 5}, "0:65535": {0, 65535},
	}
	for in, want := range valid {
		lo, hi, err := ParsePortRange(in)
		if err != nil {
			t.Errorf("ParsePortRange(%q): %v", in, err)
			continue
		}
		if diff := cmp.Diff(want, rng{lo, hi}); diff != "" {
			t.Errorf("ParsePortRange(%q) (-want +got):\n%s", in, diff)
		}
	}
	for _, in := range []string{"", ":", "80:", ":80", "1:2:3", "65536", "-1", "+80", "2000:1000", " 80", "80 ", "http", "1-2", "0x50", strings.Repeat("0", 30) + "1"} {
		if lo, hi, err := ParsePortRange(in); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParsePortRange(%q) = %d, %d, %v; want ErrMalformed", in, lo, hi, err)
		}
	}
}

func FuzzDecodeCommand(f *testing.F) {
	good, err := EncodeCommand(validCommand())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"version":1,"action":"stop","namespace":"a","name":"b","uid":"u","node":"n","issuedAt":"2025-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"version":2}`))
	f.Add([]byte(`{}`))
	f.Fuzz(commandCodec.fuzz)
}

func BenchmarkDecodeCommand(b *testing.B) {
	for _, n := range []int{2, 64} {
		b.Run(fmt.Sprintf("endpoints=%d", n), func(b *testing.B) {
			c := validCommand()
			c.Endpoints = nil
			for i := range n {
				c.Endpoints = append(c.Endpoints, Endpoint{
					Pod: fmt.Sprintf("web-%d", i), Namespace: "prod", Interface: fmt.Sprintf("cali%011x", i),
					Labels: map[string]string{"app": "web", "projectcalico.org/orchestrator": "k8s"},
				})
			}
			enc, err := EncodeCommand(c)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(enc)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := DecodeCommand(enc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
