package selector

import (
	"errors"
	"testing"
)

// FuzzParse checks that Parse never panics, that every error is a
// well-formed *SyntaxError, and that every accepted selector survives the
// String round trip with the same meaning.
func FuzzParse(f *testing.F) {
	for _, tc := range syntaxCases {
		if len(tc.in) <= 4096 {
			f.Add(tc.in)
		}
	}
	for _, tc := range workedCases {
		f.Add(tc.in)
	}
	for _, tc := range evalCases {
		if len(tc.sel) <= 4096 {
			f.Add(tc.sel)
		}
	}
	for _, tc := range benchSelectors {
		f.Add(tc.sel)
	}
	f.Fuzz(func(t *testing.T, in string) {
		sel, err := Parse(in)
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("Parse(%q) error %T is not a *SyntaxError", in, err)
			}
			if se.Offset < 0 || se.Offset > len(in) || se.Input != in {
				t.Fatalf("Parse(%q): SyntaxError offset %d out of range or wrong input", in, se.Offset)
			}
			_ = se.Error()
			return
		}
		checkRoundTrip(t, in, sel)
	})
}
