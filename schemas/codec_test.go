package schemas

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// jsonCodec is a JSON wire type's encoder and decoder (Command, Status), for
// the checks they share: round trip, decode errors, re-encoding in fuzzing.
type jsonCodec[T any] struct {
	// name is the type's name in EncodeXxx and DecodeXxx.
	name   string
	encode func(*T) ([]byte, error)
	decode func([]byte) (*T, error)
	// versioned returns a copy of v with Version set as the encoder sets it.
	versioned func(v T) *T
}

var (
	commandCodec = jsonCodec[Command]{name: "Command", encode: EncodeCommand, decode: DecodeCommand,
		versioned: func(c Command) *Command { c.Version = Version; return &c }}
	statusCodec = jsonCodec[Status]{name: "Status", encode: EncodeStatus, decode: DecodeStatus,
		versioned: func(s Status) *Status { s.Version = Version; return &s }}
)

// roundTrip encodes v, which the encoder must leave alone, and decodes it
// back to v with the current Version.
func (c jsonCodec[T]) roundTrip(t *testing.T, v *T) {
	t.Helper()
	before := *v
	b, err := c.encode(v)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(before, *v); diff != "" {
		t.Errorf("Encode%s modified its argument (-before +after):\n%s", c.name, diff)
	}
	got, err := c.decode(b)
	if err != nil {
		t.Fatalf("Decode%s(%s): %v", c.name, b, err)
	}
	if diff := cmp.Diff(c.versioned(*v), got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
}

// editor returns edit, which re-encodes good after f changed its JSON
// fields, to reach the validation rules the encoder itself would refuse to
// produce.
func editor(t *testing.T, good []byte) (edit func(f func(m map[string]any)) []byte) {
	return func(f func(m map[string]any)) []byte {
		t.Helper()
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
}

// decodeCase is an input the decoder must refuse, and the sentinel its
// error must wrap.
type decodeCase struct {
	in   []byte
	want error
}

// decodeErrors checks each input is refused with its sentinel, no value,
// and exactly one of ErrMalformed and ErrUnknownVersion: consumers count
// them apart.
func (c jsonCodec[T]) decodeErrors(t *testing.T, tests map[string]decodeCase) {
	t.Helper()
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := c.decode(tc.in)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Decode%s = %+v, %v; want %v", c.name, got, err, tc.want)
			}
			if got != nil {
				t.Errorf("Decode%s returned %+v with an error", c.name, got)
			}
			if errors.Is(err, ErrMalformed) == errors.Is(err, ErrUnknownVersion) {
				t.Errorf("error %v: want exactly one of ErrMalformed and ErrUnknownVersion", err)
			}
		})
	}
}

// fuzz is a fuzz target's body: what the decoder refuses wraps one of the
// two sentinels, and what it accepts re-encodes and decodes to the same
// value.
func (c jsonCodec[T]) fuzz(t *testing.T, b []byte) {
	v, err := c.decode(b)
	if err != nil {
		if v != nil {
			t.Fatalf("Decode%s returned %+v with error %v", c.name, v, err)
		}
		if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnknownVersion) {
			t.Fatalf("error %v wraps neither ErrMalformed nor ErrUnknownVersion", err)
		}
		return
	}
	again, err := c.encode(v)
	if err != nil {
		t.Fatalf("decoded %+v does not encode: %v", v, err)
	}
	v2, err := c.decode(again)
	if err != nil {
		t.Fatalf("re-encoded %s does not decode: %v", again, err)
	}
	if diff := cmp.Diff(v, v2, cmpopts.EquateEmpty()); diff != "" {
		t.Fatalf("re-encoding changed the %s (-first +second):\n%s", c.name, diff)
	}
}
