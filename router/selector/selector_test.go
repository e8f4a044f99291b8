package selector

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// caseName keeps subtest names readable for huge or control-byte inputs.
func caseName(in string) string {
	if len(in) > 60 {
		return fmt.Sprintf("%q...(%d bytes)", in[:40], len(in))
	}
	return fmt.Sprintf("%q", in)
}

func TestParseValidity(t *testing.T) {
	for _, tc := range syntaxCases {
		t.Run(caseName(tc.in), func(t *testing.T) {
			sel, err := Parse(tc.in)
			if got := err == nil; got != tc.valid {
				t.Fatalf("Parse(%q): valid = %v, want %v (err: %v)", tc.in, got, tc.valid, err)
			}
			if err != nil {
				var se *SyntaxError
				if !errors.As(err, &se) {
					t.Fatalf("Parse(%q) error %T is not a *SyntaxError", tc.in, err)
				}
				if se.Input != tc.in || se.Offset < 0 || se.Offset > len(tc.in) {
					t.Errorf("Parse(%q): bad SyntaxError offset %d / input %q", tc.in, se.Offset, se.Input)
				}
				return
			}
			if sel == nil {
				t.Fatalf("Parse(%q) returned nil selector and nil error", tc.in)
			}
		})
	}
}

func TestWorkedExamples(t *testing.T) {
	for name, tc := range workedCases {
		t.Run(name, func(t *testing.T) {
			sel, err := Parse(tc.in)
			if got := err == nil; got != tc.valid {
				t.Fatalf("Parse(%q): valid = %v, want %v (err: %v)", tc.in, got, tc.valid, err)
			}
			if !tc.valid {
				return
			}
			maps := anyLabels
			if tc.labels != nil {
				maps = []map[string]string{tc.labels}
			}
			for _, labels := range maps {
				if got := sel.Evaluate(labels); got != tc.match {
					t.Errorf("Parse(%q).Evaluate(%v) = %v, want %v", tc.in, labels, got, tc.match)
				}
			}
		})
	}
}

func TestEvaluate(t *testing.T) {
	for name, tc := range evalCases {
		t.Run(name, func(t *testing.T) {
			sel, err := Parse(tc.sel)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tc.sel, err)
			}
			if got := sel.Evaluate(tc.labels); got != tc.want {
				t.Errorf("Parse(%q).Evaluate(%v) = %v, want %v", tc.sel, tc.labels, got, tc.want)
			}
		})
	}
}

func TestString(t *testing.T) {
	tests := map[string]struct {
		in   string
		want string
	}{
		"empty":              {``, `all()`},
		"blank":              {" \t ", `all()`},
		"all spaced":         {`all( )`, `all()`},
		"global spaced":      {"global(\t)", `global()`},
		"has spaced":         {`has( a )`, `has(a)`},
		"eq compact":         {`a=="x"`, `a == "x"`},
		"single quotes":      {`a == 'x'`, `a == "x"`},
		"value with dquote":  {`a == 'say "hi"'`, `a == 'say "hi"'`},
		"value with squote":  {`a == "it's"`, `a == "it's"`},
		"backslash":          {`a=="a\"`, `a == "a\"`},
		"ne":                 {`a!=""`, `a != ""`},
		"set sorted deduped": {`a notin {"y","x","x",}`, `a not in {"x", "y"}`},
		"set mixed quotes":   {`a in {'"', "'"}`, `a in {'"', "'"}`},
		"empty set":          {`a in { }`, `a in {}`},
		"starts":             {`a startswith"x"`, `a starts with "x"`},
		"ends":               {`a ends  with "x"`, `a ends with "x"`},
		"contains":           {`a contains""`, `a contains ""`},
		"neg comparison":     {`!a == "x"`, `!(a == "x")`},
		"neg has":            {`! has(a)`, `!has(a)`},
		"neg all":            {`!all()`, `!all()`},
		"triple neg":         {`!!!has(a)`, `!has(a)`},
		"double neg":         {`!!has(a)`, `has(a)`},
		"nested double neg":  {`!(!has(a))`, `has(a)`},
		"redundant parens":   {`((has(a)))`, `has(a)`},
		"flatten and":        {`(has(a) && has(b)) && has(c)`, `has(a) && has(b) && has(c)`},
		"flatten or":         {`has(a) || (has(b) || has(c))`, `has(a) || has(b) || has(c)`},
		"or inside and":      {`(has(a) || has(b)) && has(c)`, `(has(a) || has(b)) && has(c)`},
		"and inside or":      {`has(a) || (has(b) && has(c))`, `has(a) || has(b) && has(c)`},
		"neg or":             {`!(has(a) || has(b))`, `!(has(a) || has(b))`},
		"neg and":            {`!(has(a)&&has(b))`, `!(has(a) && has(b))`},
		"precedence example": {`!has(a) || b == "1" && c == "1"`, `!has(a) || b == "1" && c == "1"`},
		"key named not":      {`not in {"x"}`, `not in {"x"}`},
		"key named has":      {`has == "x"`, `has == "x"`},
		"calico": {
			`projectcalico.org/namespace == 'prod' && (app in {"web","api"} || tier starts with "front")`,
			`projectcalico.org/namespace == "prod" && (app in {"api", "web"} || tier starts with "front")`,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			sel, err := Parse(tc.in)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tc.in, err)
			}
			if diff := cmp.Diff(tc.want, sel.String()); diff != "" {
				t.Errorf("Parse(%q).String() mismatch (-want +got):\n%s", tc.in, diff)
			}
		})
	}
}

// validInputs gathers every valid selector from the tables.
func validInputs() []string {
	var out []string
	for _, tc := range syntaxCases {
		if tc.valid {
			out = append(out, tc.in)
		}
	}
	for _, tc := range workedCases {
		if tc.valid {
			out = append(out, tc.in)
		}
	}
	for _, tc := range evalCases {
		out = append(out, tc.sel)
	}
	return out
}

// roundTripMaps returns label maps that exercise sel: the shared maps, plus
// maps built from its own keys and literal values (present and absent, equal
// and not), so that the comparison is not trivially true.
func roundTripMaps(sel *Selector) []map[string]string {
	maps := append([]map[string]string(nil), anyLabels...)
	values := []string{"", "x", "zz"}
	sel.root.collectValues(&values)
	if len(values) > 12 {
		values = values[:12]
	}
	keys := sel.Keys()
	if len(keys) > 8 {
		keys = keys[:8]
	}
	for _, v := range values {
		all := make(map[string]string)
		for _, k := range keys {
			all[k] = v
			maps = append(maps, map[string]string{k: v}, map[string]string{k: v + "!"})
		}
		maps = append(maps, all)
	}
	// Alternate values across keys so that chains see mixed results.
	for shift := range 3 {
		m := make(map[string]string)
		for i, k := range keys {
			if (i+shift)%3 != 0 {
				m[k] = values[(i+shift)%len(values)]
			}
		}
		maps = append(maps, m)
	}
	return maps
}

func (n *node) collectValues(values *[]string) {
	if n.op != opHas && n.key != "" {
		*values = append(*values, n.value)
	}
	*values = append(*values, n.set...)
	for i := range n.kids {
		n.kids[i].collectValues(values)
	}
}

// checkRoundTrip verifies that the canonical form is a fixed point and
// evaluates like the original. It is shared with FuzzParse.
func checkRoundTrip(t *testing.T, in string, sel *Selector) {
	t.Helper()
	canon := sel.String()
	again, err := Parse(canon)
	if err != nil {
		t.Fatalf("Parse(%q) ok, but its String %q does not parse: %v", in, canon, err)
	}
	if diff := cmp.Diff(canon, again.String()); diff != "" {
		t.Fatalf("String of %q is not a fixed point (-first +second):\n%s", in, diff)
	}
	if diff := cmp.Diff(sel.Keys(), again.Keys()); diff != "" {
		t.Errorf("Keys of %q changed through String (-before +after):\n%s", in, diff)
	}
	if !sel.Equal(again) {
		t.Errorf("Parse(%q) is not Equal to Parse(%q)", in, canon)
	}
	for _, labels := range roundTripMaps(sel) {
		want := sel.Evaluate(labels)
		if got := again.Evaluate(labels); got != want {
			t.Errorf("Evaluate(%v): %q gives %v but its canonical %q gives %v", labels, in, want, canon, got)
		}
		// Keys promises that other labels never matter.
		extra := map[string]string{"zz:unrelated": "x", "ü": ""}
		for k, v := range labels {
			extra[k] = v
		}
		if got := sel.Evaluate(extra); got != want {
			t.Errorf("%q: a label outside Keys() changed Evaluate(%v) from %v to %v", in, labels, want, got)
		}
	}
}

func TestStringRoundTrip(t *testing.T) {
	for _, in := range validInputs() {
		t.Run(caseName(in), func(t *testing.T) {
			sel, err := Parse(in)
			if err != nil {
				t.Fatalf("Parse(%q): %v", in, err)
			}
			checkRoundTrip(t, in, sel)
		})
	}
}

func TestSyntaxErrorOffset(t *testing.T) {
	tests := map[string]struct {
		in     string
		offset int
	}{
		"bare word rhs":        {`a == web`, 5},
		"lone equals":          {`a = "x"`, 2},
		"trailing newline":     {"a == \"x\"\n", 8},
		"nbsp":                 {"a\u00a0== \"x\"", 1},
		"nul":                  {"has(a) && \x00", 10},
		"unterminated":         {`a == "abc`, 5},
		"space before paren":   {`has (a)`, 4},
		"empty has":            {`has()`, 4},
		"has with literal":     {`has("a")`, 4},
		"unclosed paren":       {`((a == "1")`, 11},
		"missing set comma":    {`a in {"x" "y"}`, 10},
		"operator boundary":    {`a inx {}`, 2},
		"leftover":             {`has(a) has(b)`, 7},
		"literal lhs":          {`"a" == "b"`, 0},
		"long key":             {`x == "1" || ` + key513 + ` == "x"`, 12},
		"long has key":         {`has( ` + key513 + `)`, 5},
		"too deep":             {strings.Repeat("(", MaxNestingDepth+1) + "has(a)", MaxNestingDepth},
		"lone not":             {`!`, 1},
		"not equals operand":   {`!!= "x"`, 1},
		"newline only":         {"\n", 0},
		"second key":           {`a b == "x"`, 2},
		"upper-case operator":  {`a IN {"x"}`, 2},
		"empty operand in and": {`has(a) && `, 10},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := Parse(tc.in)
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("Parse(%q) error = %v, want a *SyntaxError", tc.in, err)
			}
			if diff := cmp.Diff(tc.offset, se.Offset); diff != "" {
				t.Errorf("Parse(%q) offset mismatch (-want +got):\n%s\nerror: %v", tc.in, diff, err)
			}
			if se.Input != tc.in {
				t.Errorf("SyntaxError.Input = %q, want %q", se.Input, tc.in)
			}
		})
	}
}

func TestSyntaxErrorMessage(t *testing.T) {
	tests := map[string]struct {
		in   string
		want string
	}{
		"example from the brief": {
			`a == web`,
			`selector: at offset 5: expected string literal after "==", found "web"`,
		},
		"end of input": {
			`a ==`,
			`selector: at offset 4: expected string literal after "==", found end of input`,
		},
		"control bytes are quoted": {
			"has(a) \x00\n",
			`selector: at offset 7: invalid character '\x00'; expected "&&", "||" or end of input, found "\x00\n"`,
		},
		"long excerpt is cut": {
			`a == "1" ` + key513,
			`selector: at offset 9: expected "&&", "||" or end of input, found "kkkkkkkkkkkkkkkkkkkkkkkk"...`,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := Parse(tc.in)
			if err == nil {
				t.Fatalf("Parse(%q) succeeded, want error", tc.in)
			}
			if diff := cmp.Diff(tc.want, err.Error()); diff != "" {
				t.Errorf("error text mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestKeys(t *testing.T) {
	tests := map[string]struct {
		in   string
		want []string
	}{
		"empty":       {``, []string{}},
		"all":         {`all() && global()`, []string{}},
		"has":         {`has(a)`, []string{"a"}},
		"every form":  {`d != "x" && has(c) || b in {} && !a contains "x" || e not in {"y"}`, []string{"a", "b", "c", "d", "e"}},
		"duplicates":  {`has(a) && a == "x" || !a starts with "y"`, []string{"a"}},
		"odd keys":    {`has == "x" && not in {} && has(-)`, []string{"-", "has", "not"}},
		"calico keys": {`projectcalico.org/namespace == "prod" && app == "web"`, []string{"app", "projectcalico.org/namespace"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			sel := MustParse(tc.in)
			got := sel.Keys()
			if got == nil {
				got = []string{}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Parse(%q).Keys() mismatch (-want +got):\n%s", tc.in, diff)
			}
		})
	}

	t.Run("returns a copy", func(t *testing.T) {
		sel := MustParse(`has(a) && has(b)`)
		sel.Keys()[0] = "mutated"
		if diff := cmp.Diff([]string{"a", "b"}, sel.Keys()); diff != "" {
			t.Errorf("Keys() exposed internal state (-want +got):\n%s", diff)
		}
	})
}

func TestEqual(t *testing.T) {
	tests := map[string]struct {
		a, b string
		want bool
	}{
		"same text":           {`a == "x"`, `a == "x"`, true},
		"quotes and spacing":  {`a=="x"`, `a == 'x'`, true},
		"set order and dupes": {`a in {"y","x"}`, `a in {"x","y","x",}`, true},
		"operator spelling":   {`a notin {}`, `a not  in {}`, true},
		"grouping":            {`(has(a) && has(b)) && has(c)`, `has(a) && (has(b) && has(c))`, true},
		"double negation":     {`!!has(a)`, `has(a)`, true},
		"empty and all":       {``, `all()`, true},
		"all and global":      {`all()`, `global()`, false},
		"operand order":       {`has(a) && has(b)`, `has(b) && has(a)`, false},
		"ne is not neg eq":    {`a != "x"`, `!a == "x"`, false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := MustParse(tc.a).Equal(MustParse(tc.b)); got != tc.want {
				t.Errorf("Equal(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
			}
		})
	}

	t.Run("nil", func(t *testing.T) {
		var none *Selector
		if !none.Equal(nil) || none.Equal(MustParse("")) || MustParse("").Equal(nil) {
			t.Error("nil selectors must equal only nil")
		}
	})
}

func TestZeroValue(t *testing.T) {
	var sel Selector
	if !sel.Evaluate(nil) || !sel.Evaluate(map[string]string{"a": "x"}) {
		t.Error("zero Selector must match everything")
	}
	if diff := cmp.Diff("all()", sel.String()); diff != "" {
		t.Errorf("zero Selector String mismatch (-want +got):\n%s", diff)
	}
	if !sel.Equal(MustParse("")) {
		t.Error("zero Selector must equal the empty selector")
	}
}

func TestMustParse(t *testing.T) {
	if MustParse(`has(a)`).String() != "has(a)" {
		t.Error("MustParse returned the wrong selector")
	}
	defer func() {
		r := recover()
		if _, ok := r.(*SyntaxError); !ok {
			t.Errorf("MustParse(invalid) panicked with %v, want a *SyntaxError", r)
		}
	}()
	MustParse(`a = "x"`)
	t.Error("MustParse(invalid) did not panic")
}

func TestEvaluateDoesNotAllocate(t *testing.T) {
	labels := workloadLabels()
	for _, in := range benchSelectors {
		sel := MustParse(in.sel)
		if n := testing.AllocsPerRun(100, func() { sel.Evaluate(labels) }); n != 0 {
			t.Errorf("Evaluate(%q) allocates %v times per call, want 0", in.sel, n)
		}
	}
}

func TestConcurrentEvaluate(t *testing.T) {
	sel := MustParse(`app in {"web", "api"} && !has(canary) || tier != "db"`)
	labels := workloadLabels()
	want := sel.Evaluate(labels)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				if sel.Evaluate(labels) != want {
					t.Error("concurrent Evaluate disagreed")
					return
				}
			}
		})
	}
	wg.Wait()
}
