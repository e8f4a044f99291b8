package schemas

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
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
		Time:         time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC),
	}
}

func TestStatusRoundTrip(t *testing.T) {
	tests := map[string]func(s *Status){
		"full":     func(*Status) {},
		"producer": func(s *Status) { s.Source = SourceProducer; s.Directory = ""; s.Objects = nil },
		"error":    func(s *Status) { s.State = StateError; s.LastError = "afpacket: no such device «x»" },
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
			b, err := EncodeStatus(s)
			if err != nil {
				t.Fatal(err)
			}
			got, err := DecodeStatus(b)
			if err != nil {
				t.Fatalf("DecodeStatus(%s): %v", b, err)
			}
			want := *s
			want.Version = Version
			if diff := cmp.Diff(&want, got); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeStatusErrors(t *testing.T) {
	good, err := EncodeStatus(validStatus())
	if err != nil {
		t.Fatal(err)
	}
	edit := func(f func(m map[string]any)) []byte {
		var m map[string]any
		if err := json.Unmarshal(good, &m); err != nil {
			t.Fatal(err)
		}
		f(m)
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	set := func(k string, v any) []byte { return edit(func(m map[string]any) { m[k] = v }) }
	tooMany := make([]any, MaxStatusObjects+1)
	for i := range tooMany {
		tooMany[i] = "x"
	}
	tests := map[string]struct {
		in   []byte
		want error
	}{
		"empty":           {nil, ErrMalformed},
		"garbage":         {[]byte("{{"), ErrMalformed},
		"version 0":       {set("version", 0), ErrUnknownVersion},
		"version 9":       {set("version", 9), ErrUnknownVersion},
		"bad source":      {set("source", "sink-flows"), ErrMalformed},
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
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := DecodeStatus(tc.in)
			if !errors.Is(err, tc.want) {
				t.Fatalf("DecodeStatus = %+v, %v; want %v", got, err, tc.want)
			}
			if errors.Is(err, ErrMalformed) == errors.Is(err, ErrUnknownVersion) {
				t.Errorf("error %v: want exactly one of ErrMalformed and ErrUnknownVersion", err)
			}
		})
	}
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
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := DecodeStatus(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnknownVersion) {
				t.Fatalf("error %v wraps neither ErrMalformed nor ErrUnknownVersion", err)
			}
			return
		}
		again, err := EncodeStatus(s)
		if err != nil {
			t.Fatalf("decoded %+v does not encode: %v", s, err)
		}
		s2, err := DecodeStatus(again)
		if err != nil {
			t.Fatalf("re-encoded %s does not decode: %v", again, err)
		}
		if diff := cmp.Diff(s, s2, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("re-encoding changed the status (-first +second):\n%s", diff)
		}
	})
}
