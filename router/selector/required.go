package selector

import (
	"maps"
	"slices"
)

// Requirement is a condition on one label that every label map matching a
// selector meets: the label is present and, unless AnyValue is set, its
// value is one of Values.
type Requirement struct {
	// Key is the label key.
	Key string
	// AnyValue is set when only the presence of Key is required (has(k),
	// contains, starts with, ends with).
	AnyValue bool
	// Values are the allowed values, sorted and duplicate-free, when
	// AnyValue is not set. Empty means no value is allowed: the selector
	// matches no label map at all (`k in {}`).
	Values []string
}

// Requirements returns conditions that every label map matching the
// selector meets, sorted by key: a necessary condition, never a sufficient
// one, meant for narrowing a set of label maps with an index before
// evaluating the selector on each remaining one.
//
// They come from `k == "v"`, `k in {...}`, has(k) and the presence tests
// (contains, starts with, ends with) that the selector requires through
// any nesting of && and ||, with negations pushed inwards (so `!(k != "v")`
// requires k == "v" and `!(a || b)` is read as `!a && !b`). An || requires
// a key only when each of its operands does, with the union of their
// values. A selector with none of these (all(), an empty selector, only !=
// and not in, or an || whose operands test different keys) returns none:
// then every label map is a candidate.
func (s *Selector) Requirements() []Requirement {
	reqs := s.root.required(false)
	out := make([]Requirement, 0, len(reqs))
	for _, k := range slices.Sorted(maps.Keys(reqs)) {
		r := reqs[k]
		out = append(out, Requirement{Key: k, AnyValue: r.any, Values: slices.Clone(r.values)})
	}
	return out
}

// valueSet is what a requirement allows of one key: any value, or one of
// values (sorted, duplicate-free).
type valueSet struct {
	any    bool
	values []string
}

// required returns the requirements of n, or of !n when neg is set.
func (n *node) required(neg bool) map[string]valueSet {
	switch n.op {
	case opHas, opContains, opStartsWith, opEndsWith:
		if !neg {
			return map[string]valueSet{n.key: {any: true}}
		}
	case opEq, opNe:
		if neg == (n.op == opNe) {
			return map[string]valueSet{n.key: {values: []string{n.value}}}
		}
	case opIn, opNotIn:
		if neg == (n.op == opNotIn) {
			return map[string]valueSet{n.key: {values: n.set}}
		}
	case opNot:
		return n.kids[0].required(!neg)
	case opAnd, opOr:
		// De Morgan: a negated && is an || of negations and vice versa.
		if (n.op == opAnd) != neg {
			return n.requiredAll(neg)
		}
		return n.requiredAny(neg)
	}
	// all(), global(), and the tests that absent labels pass.
	return nil
}

// requiredAll is the requirements of a conjunction of n's kids (negated
// when neg is set): every kid's, intersected per key.
func (n *node) requiredAll(neg bool) map[string]valueSet {
	out := map[string]valueSet{}
	for i := range n.kids {
		for k, vs := range n.kids[i].required(neg) {
			prev, ok := out[k]
			switch {
			case !ok || prev.any:
				out[k] = vs
			case !vs.any:
				out[k] = valueSet{values: intersect(prev.values, vs.values)}
			}
		}
	}
	return out
}

// requiredAny is the requirements of a disjunction of n's kids (negated
// when neg is set): the keys every kid requires, with the union of values.
func (n *node) requiredAny(neg bool) map[string]valueSet {
	var out map[string]valueSet
	for i := range n.kids {
		kid := n.kids[i].required(neg)
		if len(kid) == 0 {
			return nil
		}
		if out == nil {
			out = kid
			continue
		}
		for k, prev := range out {
			vs, ok := kid[k]
			switch {
			case !ok:
				delete(out, k)
			case prev.any || vs.any:
				out[k] = valueSet{any: true}
			default:
				out[k] = valueSet{values: union(prev.values, vs.values)}
			}
		}
		if len(out) == 0 {
			return nil
		}
	}
	return out
}

// intersect returns the sorted values in both sorted lists, never nil.
func intersect(a, b []string) []string {
	out := []string{}
	for _, v := range a {
		if _, ok := slices.BinarySearch(b, v); ok {
			out = append(out, v)
		}
	}
	return out
}

// union returns the sorted, duplicate-free values of two sorted lists.
func union(a, b []string) []string {
	out := slices.Concat(a, b)
	slices.Sort(out)
	return slices.Compact(out)
}
