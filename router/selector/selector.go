// Package selector implements the Calico label-selector language, as
// specified in SPEC.md beside this file, so the router can decide which
// workload endpoints a capture applies to without depending on
// libcalico-go.
//
// The package is pure: Parse turns a selector string into an immutable
// *Selector and Evaluate tests it against one label map. There are no
// goroutines, caches or global state, so a *Selector may be shared freely
// between goroutines and kept for as long as the caller likes.
//
// Validity follows the current (hand-written tokenizer) Calico behaviour
// exactly, with one deliberate restriction: parentheses may nest at most
// MaxNestingDepth levels, so that hostile input cannot exhaust the stack.
package selector

import (
	"slices"
	"strings"
)

const (
	// MaxKeyLength is the longest label key, in bytes, that a selector may
	// name. Calico rejects longer keys, so accepting them here would let a
	// selector through that Calico itself refuses.
	MaxKeyLength = 512

	// MaxNestingDepth bounds how deeply parentheses may nest. Calico has no
	// explicit limit; this one exists because the parser, String and
	// Evaluate all recurse once per level, and real selectors never come
	// close to it. Runs of "!" do not count: they are folded iteratively.
	MaxNestingDepth = 512
)

// Selector is a parsed label selector. The zero value matches every label
// map, like the empty selector. A Selector is immutable once built and safe
// for concurrent use.
type Selector struct {
	root node
	// canon is the canonical text, built once at parse time so that String
	// and Equal are free on the hot paths that log or deduplicate
	// selectors. Empty only for the zero value.
	canon string
	// keys is the sorted, duplicate-free list of label keys the selector
	// reads; Keys hands out copies so callers cannot corrupt it.
	keys []string
}

// op identifies the kind of a node. The zero value is opAll so that the
// zero Selector matches everything.
type op uint8

const (
	opAll op = iota
	opGlobal
	opHas
	opEq
	opNe
	opIn
	opNotIn
	opContains
	opStartsWith
	opEndsWith
	opNot
	opAnd
	opOr
)

// node is one element of the expression tree. A single struct type with a
// switch (rather than an interface per form) keeps the tree in a few
// contiguous allocations and lets Evaluate run without any allocation.
type node struct {
	op op
	// key is the label key for comparisons and has().
	key string
	// value is the string operand of ==, !=, contains, starts/ends with.
	value string
	// set holds the elements of in/not in, sorted and deduplicated so
	// that membership is a binary search and the canonical form is stable.
	set []string
	// kids holds the operand of ! (exactly one) or the operands of an
	// && / || chain (at least two, never themselves the same operator).
	kids []node
}

// Parse parses a selector. The empty and whitespace-only selectors are
// valid and match everything. On failure the error is a *SyntaxError that
// says at which byte offset the input went wrong.
func Parse(s string) (*Selector, error) {
	p := parser{src: s}
	root, err := p.parseSelector()
	if err != nil {
		return nil, err
	}
	sel := &Selector{root: root}
	var b strings.Builder
	root.write(&b)
	sel.canon = b.String()
	root.collectKeys(&sel.keys)
	slices.Sort(sel.keys)
	sel.keys = slices.Compact(sel.keys)
	return sel, nil
}

// MustParse is like Parse but panics if s is invalid. It is meant for
// selectors written into the program or its tests, where an invalid one is
// a programmer error; never use it on user or API input.
func MustParse(s string) *Selector {
	sel, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return sel
}

// Evaluate reports whether labels match the selector. A nil map is an
// empty label set. It does not allocate.
func (s *Selector) Evaluate(labels map[string]string) bool {
	return s.root.eval(labels)
}

// String returns the canonical form of the selector. Parsing it again gives
// a selector that evaluates identically and has the same String, so it is
// suitable for storing, logging and comparing. See the package tests for
// the format; in short: `all()`, `has(k)`, `k == "v"`, `k in {"a", "b"}`,
// `!has(k)`, `!(k == "v")`, and && / || chains with the minimum of
// parentheses. Values that contain a double quote are written with single
// quotes, since the language has no escapes.
func (s *Selector) String() string {
	if s.canon == "" {
		// Zero value: never went through Parse.
		return "all()"
	}
	return s.canon
}

// Equal reports whether s and o have the same canonical form. Selectors that
// are equal always evaluate identically; the converse does not hold, since
// no reordering or logical simplification beyond removing redundant
// parentheses, duplicate set elements and double negation is attempted.
// A nil Selector is equal only to another nil.
func (s *Selector) Equal(o *Selector) bool {
	if s == nil || o == nil {
		return s == o
	}
	return s.String() == o.String()
}

// Keys returns the sorted label keys the selector reads. Labels outside this
// list never affect Evaluate, so a caller only needs to re-evaluate when one
// of these keys is added, removed or changes value.
//
// Keys is not a list of required labels: a selector may match a label map
// that has none of them, because `k != "v"` and `k not in {...}` match when
// k is absent (and all() or an empty selector reads no key at all). Do not
// use it to index selectors by the labels an endpoint must carry; that is
// what Requirements returns.
func (s *Selector) Keys() []string {
	return slices.Clone(s.keys)
}

func (n *node) eval(labels map[string]string) bool {
	switch n.op {
	case opAll, opGlobal:
		// global() only means something to the namespaceSelector code
		// that applies it; as a label test it always matches.
		return true
	case opHas:
		_, ok := labels[n.key]
		return ok
	case opEq:
		v, ok := labels[n.key]
		return ok && v == n.value
	case opNe:
		// Absent labels match: this is Calico's rule and the one most
		// often gotten wrong.
		v, ok := labels[n.key]
		return !ok || v != n.value
	case opIn:
		v, ok := labels[n.key]
		return ok && n.inSet(v)
	case opNotIn:
		v, ok := labels[n.key]
		return !ok || !n.inSet(v)
	case opContains:
		v, ok := labels[n.key]
		return ok && strings.Contains(v, n.value)
	case opStartsWith:
		v, ok := labels[n.key]
		return ok && strings.HasPrefix(v, n.value)
	case opEndsWith:
		v, ok := labels[n.key]
		return ok && strings.HasSuffix(v, n.value)
	case opNot:
		return !n.kids[0].eval(labels)
	case opAnd:
		for i := range n.kids {
			if !n.kids[i].eval(labels) {
				return false
			}
		}
		return true
	case opOr:
		for i := range n.kids {
			if n.kids[i].eval(labels) {
				return true
			}
		}
		return false
	}
	panic("selector: unknown node kind")
}

// inSetLinearMax is the set size up to which a linear scan beats binary
// search; most real sets have one to three elements.
const inSetLinearMax = 8

func (n *node) inSet(v string) bool {
	if len(n.set) <= inSetLinearMax {
		return slices.Contains(n.set, v)
	}
	_, found := slices.BinarySearch(n.set, v)
	return found
}

func (n *node) collectKeys(keys *[]string) {
	if n.key != "" {
		*keys = append(*keys, n.key)
	}
	for i := range n.kids {
		n.kids[i].collectKeys(keys)
	}
}

// write appends the canonical form of n to b.
func (n *node) write(b *strings.Builder) {
	switch n.op {
	case opAll:
		b.WriteString("all()")
	case opGlobal:
		// Kept distinct from all() because callers that apply a
		// namespaceSelector give it a meaning of its own.
		b.WriteString("global()")
	case opHas:
		b.WriteString("has(")
		b.WriteString(n.key)
		b.WriteByte(')')
	case opEq, opNe, opContains, opStartsWith, opEndsWith:
		b.WriteString(n.key)
		b.WriteByte(' ')
		b.WriteString(opText[n.op])
		b.WriteByte(' ')
		writeLiteral(b, n.value)
	case opIn, opNotIn:
		b.WriteString(n.key)
		b.WriteByte(' ')
		b.WriteString(opText[n.op])
		b.WriteString(" {")
		for i, v := range n.set {
			if i > 0 {
				b.WriteString(", ")
			}
			writeLiteral(b, v)
		}
		b.WriteByte('}')
	case opNot:
		b.WriteByte('!')
		kid := &n.kids[0]
		switch kid.op {
		case opAll, opGlobal, opHas:
			// Function forms read unambiguously without parentheses.
			kid.write(b)
		default:
			// `!a == "x"` is legal but easy to misread as a comparison
			// of a negated key, so comparisons get parentheses too.
			b.WriteByte('(')
			kid.write(b)
			b.WriteByte(')')
		}
	case opAnd, opOr:
		sep := " && "
		if n.op == opOr {
			sep = " || "
		}
		for i := range n.kids {
			if i > 0 {
				b.WriteString(sep)
			}
			kid := &n.kids[i]
			// Only an || inside an && needs parentheses: && binds
			// tighter, and chains of the same operator are flattened
			// at parse time.
			if n.op == opAnd && kid.op == opOr {
				b.WriteByte('(')
				kid.write(b)
				b.WriteByte(')')
			} else {
				kid.write(b)
			}
		}
	default:
		panic("selector: unknown node kind")
	}
}

// opText is the canonical spelling of each comparison operator, shared by
// String and the parser's error messages so the two never disagree.
var opText = [...]string{
	opEq:         "==",
	opNe:         "!=",
	opIn:         "in",
	opNotIn:      "not in",
	opContains:   "contains",
	opStartsWith: "starts with",
	opEndsWith:   "ends with",
}

// writeLiteral quotes v. The language has no escapes, so the quote style is
// the only tool: double quotes unless v contains one. A value holding both
// kinds cannot come out of Parse.
func writeLiteral(b *strings.Builder, v string) {
	q := byte('"')
	if strings.IndexByte(v, '"') >= 0 {
		q = '\''
	}
	b.WriteByte(q)
	b.WriteString(v)
	b.WriteByte(q)
}
