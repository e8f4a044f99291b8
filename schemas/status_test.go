package schemas

import (
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func validStatus() *Status {
	return &Status{
		Source:       SourcePcapSink,
		Namespace:    "prod",
		Name:         "web.capture",
		UID:          "6f1e2b1c-8d0a-4a57-9a43-3c9b7d2e1f00",
		Generation:   3,
		Node:         "node-1.example",
		State:        StateCapturing,
		Packets:      1 << 40,
		Bytes:        1 << 50,
		KernelDrops:  7,
		PublishDrops: 9,
		LastError:    "publish: nats: timeout\nretrying",
		Interfaces:   []string{"cali1234567890a", "eth0.100"},
		Directory:    "s3://bucket/prefix/prod/web.capture/node-1.example/",
		Objects:      []string{"web-0_cali1234567890a/20250102T030405Z-17.pcap"},
		ObjectCount:  1,
		LostBatches:  2,
		LostPackets:  300,
		Failures:     []Failure{{Reason: FailureStorageRefused, Batches: 3, Message: "put: KeyTooLongError"}},
		Time:         time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC),
	}
}

func TestStatusRoundTrip(t *testing.T) {
	tests := map[string]func(s *Status){
		"full":     func(*Status) {},
		"producer": func(s *Status) { s.Source = SourceProducer; s.Directory = ""; s.Objects = nil },
		"error":    func(s *Status) { s.State = StateError; s.LastError = "afpacket: no such device «x»" },
		"flow sink": func(s *Status) {
			s.Source, s.Directory, s.Objects, s.ObjectCount = SourceFlowSink, "", nil, 0
			s.Failures = []Failure{{Reason: FailurePanic, Batches: 1, Message: "runtime error: slice bounds out of range"}, {Reason: FailureDatabaseRefused, Batches: 9}}
		},
		"minimal": func(s *Status) {
			*s = Status{Source: SourceProducer, Namespace: "a", Name: "b", UID: "u", Node: "c", State: StateScheduled, Time: time.Unix(1, 0).UTC()}
		},
		"max objects": func(s *Status) {
			s.Objects = make([]string, MaxStatusObjects)
			for i := range s.Objects {
				s.Objects[i] = strings.Repeat("o", MaxObjectNameLength)
			}
		},
	}
	for _, st := range []State{StateScheduled, StateWaitingForTraffic, StateFinished} {
		tests[string(st)] = func(s *Status) { s.State = st }
	}
	for name, mutate := range tests {
		t.Run(name, func(t *testing.T) {
			s := validStatus()
			mutate(s)
			statusCodec.roundTrip(t, s)
		})
	}
}

func TestDecodeStatusErrors(t *testing.T) {
	good, err := EncodeStatus(validStatus())
	if err != nil {
		t.Fatal(err)
	}
	edit := editor(t, good)
	set := func(k string, v any) []byte { return edit(func(m map[string]any) { m[k] = v }) }
	tooMany := make([]any, MaxStatusObjects+1)
	for i := range tooMany {
		tooMany[i] = "x"
	}
	manyFailures := make([]any, MaxFailures+1)
	for i := range manyFailures {
		manyFailures[i] = map[string]any{"reason": "X"}
	}
	statusCodec.decodeErrors(t, map[string]decodeCase{
		"empty":           {nil, ErrMalformed},
		"garbage":         {[]byte("{{"), ErrMalformed},
		"version 0":       {set("version", 0), ErrUnknownVersion},
		"version 9":       {set("version", 9), ErrUnknownVersion},
		"bad source":      {set("source", "sink-dns"), ErrMalformed},
		"failure reason":  {set("failures", []any{map[string]any{"reason": "Panic!", "batches": 1}}), ErrMalformed},
		"no reason":       {set("failures", []any{map[string]any{"batches": 1}}), ErrMalformed},
		"long failure":    {set("failures", []any{map[string]any{"reason": "X", "message": strings.Repeat("e", MaxErrorLength+1)}}), ErrMalformed},
		"many failures":   {set("failures", manyFailures), ErrMalformed},
		"bad state":       {set("state", "capturing"), ErrMalformed},
		"name underscore": {set("name", "a_b"), ErrInvalidName},
		"node star":       {set("node", "*"), ErrInvalidName},
		"namespace gt":    {set("namespace", ">"), ErrInvalidName},
		"negative counts": {set("packets", -1), ErrMalformed},
		"bad iface":       {set("interfaces", []any{"a b"}), ErrMalformed},
		"long error":      {set("lastError", strings.Repeat("e", MaxErrorLength+1)), ErrMalformed},
		"dir control":     {set("directory", "s3://b/\n"), ErrMalformed},
		"long object":     {set("objects", []any{strings.Repeat("o", MaxObjectNameLength+1)}), ErrMalformed},
		"empty object":    {set("objects", []any{""}), ErrMalformed},
		"many objects":    {set("objects", tooMany), ErrMalformed},
		"no time":         {edit(func(m map[string]any) { delete(m, "time") }), ErrMalformed},
		"no uid":          {set("uid", ""), ErrMalformed},
	})
}

func TestEncodeStatusValidates(t *testing.T) {
	s := validStatus()
	s.LastError = "bad \xff utf-8"
	if _, err := EncodeStatus(s); !errors.Is(err, ErrMalformed) {
		t.Errorf("EncodeStatus with invalid UTF-8: %v, want ErrMalformed", err)
	}
	if _, err := EncodeStatus(nil); !errors.Is(err, ErrMalformed) {
		t.Errorf("EncodeStatus(nil): %v, want ErrMalformed", err)
	}
}

func FuzzDecodeStatus(f *testing.F) {
	good, err := EncodeStatus(validStatus())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"version":1,"source":"producer","namespace":"a","name":"b","uid":"u","node":"n","state":"Error","time":"2025-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"version":"1"}`))
	f.Fuzz(statusCodec.fuzz)
}

func TestClipText(t *testing.T) {
	euro := strings.Repeat("€", 2000) // 3 bytes each: a byte cut at 4096 splits one
	tests := map[string]struct {
		in   string
		n    int
		want string
	}{
		"short":         {"interface gone", 64, "interface gone"},
		"exact":         {"abcd", 4, "abcd"},
		"ascii cut":     {"abcdef", 4, "abcd"},
		"rune boundary": {"a€b", 3, "a"},
		"invalid":       {"bad \xff utf-8", 64, "bad \uFFFD utf-8"},
		"zero":          {"abc", 0, ""},
		"long euros":    {euro, MaxErrorLength, strings.Repeat("€", MaxErrorLength/3)},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := ClipText(tc.in, tc.n); got != tc.want {
				t.Errorf("ClipText(%.20q, %d) = %.40q, want %.40q", tc.in, tc.n, got, tc.want)
			}
		})
	}
	// What it returns is always a valid report field.
	s := validStatus()
	s.LastError = ClipText(euro, MaxErrorLength)
	s.Failures = []Failure{{Reason: FailurePanic, Message: ClipText("\xff"+euro, MaxErrorLength)}}
	if _, err := EncodeStatus(s); err != nil {
		t.Errorf("a clipped error makes the report invalid: %v", err)
	}
}

// FuzzClipText: whatever the input, the result is valid UTF-8 of at most
// n bytes, and valid input that fits comes back unchanged.
func FuzzClipText(f *testing.F) {
	f.Add("interface gone", 8)
	f.Add(strings.Repeat("€", 5), 4)
	f.Add("bad \xff utf-8", 5)
	f.Fuzz(func(t *testing.T, s string, n int) {
		n = n % (2 * MaxErrorLength)
		if n < 0 {
			n = -n
		}
		got := ClipText(s, n)
		if len(got) > n || !utf8.ValidString(got) {
			t.Fatalf("ClipText(%q, %d) = %q: %d bytes, valid %v", s, n, got, len(got), utf8.ValidString(got))
		}
		if utf8.ValidString(s) && len(s) <= n && got != s {
			t.Fatalf("ClipText(%q, %d) = %q, want it unchanged", s, n, got)
		}
	})
}
