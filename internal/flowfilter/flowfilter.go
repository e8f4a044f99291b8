// Package flowfilter is the small, typed language users filter flow
// records with (`capstream flows --where`), and its translation to a
// ClickHouse condition. No text a user writes reaches ClickHouse: Parse
// accepts only whitelisted columns, operators and literal values, checks
// each value against its column's type, and SQL renders the condition with
// every value as a bound parameter.
//
//	filter  = or
//	or      = and { "or" and }
//	and     = not { "and" not }
//	not     = "not" not | "(" or ")" | column op value
//	op      = "=" | "!=" | "<" | "<=" | ">" | ">=" | "contains"
//	value   = number | 'text' | "text" | word   (word: an address, tcp, SF...)
//
// Keywords are case-insensitive. Numbers compare with =, != and the
// orderings; text columns with =, != and contains; addresses (an IPv4 or
// IPv6 literal) with = and !=; protocol also takes a name (tcp, udp, icmp,
// icmp6, sctp, udplite). The package is pure.
package flowfilter

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
)

// Limits of a filter, so a hostile one costs nothing to refuse.
const (
	// MaxLength is the longest filter accepted, in bytes.
	MaxLength = 1024
	// MaxDepth bounds nesting (parentheses and not).
	MaxDepth = 32
)

// ErrInvalid wraps every error Parse returns.
var ErrInvalid = errors.New("invalid flow filter")

type kind int

const (
	kindUint kind = iota
	kindInt
	kindText
	kindAddr
	kindProto
)

// columns are the flows columns a filter may name, with their type. The
// capture's own scope (namespace, capture) is not among them: the caller
// adds it.
var columns = map[string]struct {
	kind kind
	max  uint64 // for kindUint
}{
	"protocol": {kindProto, 255}, "ip_version": {kindUint, 255},
	"orig_addr": {kindAddr, 0}, "resp_addr": {kindAddr, 0},
	"orig_port": {kindUint, 65535}, "resp_port": {kindUint, 65535},
	"orig_packets": {kindUint, 1<<64 - 1}, "resp_packets": {kindUint, 1<<64 - 1},
	"orig_bytes": {kindUint, 1<<64 - 1}, "resp_bytes": {kindUint, 1<<64 - 1},
	"orig_payload_bytes": {kindUint, 1<<64 - 1}, "resp_payload_bytes": {kindUint, 1<<64 - 1},
	"orig_tcp_flags": {kindUint, 255}, "resp_tcp_flags": {kindUint, 255},
	"dns_rcode":  {kindInt, 0},
	"conn_state": {kindText, 0}, "history": {kindText, 0}, "community_id": {kindText, 0},
	"dns_query": {kindText, 0}, "tls_sni": {kindText, 0}, "http_host": {kindText, 0},
	"end_reason": {kindText, 0}, "node": {kindText, 0}, "pod": {kindText, 0}, "interface": {kindText, 0},
}

// Columns lists the columns a filter may name, sorted.
func Columns() []string {
	out := make([]string, 0, len(columns))
	for c := range columns {
		out = append(out, c)
	}
	sort.Strings(out)
	return out
}

var protocols = map[string]uint64{"icmp": 1, "tcp": 6, "udp": 17, "icmp6": 58, "sctp": 132, "udplite": 136}

// Filter is a parsed filter.
type Filter struct {
	root node
}

// SQL returns the condition, parenthesised, with "?" for every value, and
// the values in order. An empty filter gives "1" and no values.
func (f *Filter) SQL() (string, []any) {
	if f == nil || f.root == nil {
		return "1", nil
	}
	var b strings.Builder
	var args []any
	f.root.sql(&b, &args)
	return b.String(), args
}

type node interface {
	sql(b *strings.Builder, args *[]any)
}

type boolNode struct {
	op          string // AND, OR
	left, right node
}

func (n *boolNode) sql(b *strings.Builder, args *[]any) {
	b.WriteByte('(')
	n.left.sql(b, args)
	b.WriteString(" " + n.op + " ")
	n.right.sql(b, args)
	b.WriteByte(')')
}

type notNode struct{ x node }

func (n *notNode) sql(b *strings.Builder, args *[]any) {
	b.WriteString("(NOT ")
	n.x.sql(b, args)
	b.WriteByte(')')
}

type cmpNode struct {
	column, op string // column from the whitelist, op from the operators
	value      any
	kind       kind
}

func (n *cmpNode) sql(b *strings.Builder, args *[]any) {
	*args = append(*args, n.value)
	switch {
	case n.op == "contains":
		b.WriteString("(position(" + n.column + ", ?) > 0)")
	case n.kind == kindAddr:
		b.WriteString("(" + n.column + " " + n.op + " toFixedString(unhex(?), 16))")
	default:
		b.WriteString("(" + n.column + " " + n.op + " ?)")
	}
}

// Parse parses a filter; an empty one matches every flow. Errors wrap
// ErrInvalid and say which part of the filter is wrong, by byte offset.
func Parse(s string) (*Filter, error) {
	if len(s) > MaxLength {
		return nil, fmt.Errorf("%w: %d bytes, longer than %d", ErrInvalid, len(s), MaxLength)
	}
	toks, err := lex(s)
	if err != nil {
		return nil, err
	}
	if len(toks) == 0 {
		return &Filter{}, nil
	}
	p := &parser{toks: toks}
	root, err := p.or(0)
	if err != nil {
		return nil, err
	}
	if p.pos < len(p.toks) {
		t := p.toks[p.pos]
		return nil, fmt.Errorf("%w: at byte %d: unexpected %q after a complete filter (a ')' too many?)", ErrInvalid, t.at, t.text)
	}
	return &Filter{root: root}, nil
}

type tokKind int

const (
	tokWord tokKind = iota // identifier, keyword, number, address, bare text
	tokText                // quoted text
	tokOp
	tokOpen
	tokClose
)

type token struct {
	kind tokKind
	text string
	at   int
}

func isWordByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '.' || c == ':' || c == '-'
}

func lex(s string) ([]token, error) {
	var toks []token
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t':
			i++
		case c == '(':
			toks = append(toks, token{tokOpen, "(", i})
			i++
		case c == ')':
			toks = append(toks, token{tokClose, ")", i})
			i++
		case c == '\'' || c == '"':
			end := strings.IndexByte(s[i+1:], c)
			if end < 0 {
				return nil, fmt.Errorf("%w: at byte %d: text opened with %c is never closed", ErrInvalid, i, c)
			}
			toks = append(toks, token{tokText, s[i+1 : i+1+end], i})
			i += end + 2
		case c == '=' || c == '<' || c == '>' || c == '!':
			op := string(c)
			if i+1 < len(s) && s[i+1] == '=' {
				op += "="
			}
			switch op {
			case "!":
				return nil, fmt.Errorf("%w: at byte %d: '!' must be '!='", ErrInvalid, i)
			case "==":
				return nil, fmt.Errorf("%w: at byte %d: '==' is not an operator: write '='", ErrInvalid, i)
			}
			toks = append(toks, token{tokOp, op, i})
			i += len(op)
		case isWordByte(c):
			j := i
			for j < len(s) && isWordByte(s[j]) {
				j++
			}
			toks = append(toks, token{tokWord, s[i:j], i})
			i = j
		default:
			return nil, fmt.Errorf("%w: at byte %d: %q is not part of the filter language (columns, = != < <= > >= contains, and or not, parentheses, numbers, quoted text)", ErrInvalid, i, c)
		}
	}
	return toks, nil
}

type parser struct {
	toks []token
	pos  int
}

func (p *parser) peek() *token {
	if p.pos < len(p.toks) {
		return &p.toks[p.pos]
	}
	return nil
}

func (p *parser) keyword(kw string) bool {
	t := p.peek()
	if t != nil && t.kind == tokWord && strings.EqualFold(t.text, kw) {
		p.pos++
		return true
	}
	return false
}

func (p *parser) or(depth int) (node, error) {
	left, err := p.and(depth)
	if err != nil {
		return nil, err
	}
	for p.keyword("or") {
		right, err := p.and(depth)
		if err != nil {
			return nil, err
		}
		left = &boolNode{op: "OR", left: left, right: right}
	}
	return left, nil
}

func (p *parser) and(depth int) (node, error) {
	left, err := p.not(depth)
	if err != nil {
		return nil, err
	}
	for p.keyword("and") {
		right, err := p.not(depth)
		if err != nil {
			return nil, err
		}
		left = &boolNode{op: "AND", left: left, right: right}
	}
	return left, nil
}

func (p *parser) not(depth int) (node, error) {
	if depth >= MaxDepth {
		return nil, fmt.Errorf("%w: nested deeper than %d", ErrInvalid, MaxDepth)
	}
	if p.keyword("not") {
		x, err := p.not(depth + 1)
		if err != nil {
			return nil, err
		}
		return &notNode{x: x}, nil
	}
	t := p.peek()
	switch {
	case t == nil:
		return nil, fmt.Errorf("%w: the filter ends where a condition should follow", ErrInvalid)
	case t.kind == tokOpen:
		p.pos++
		x, err := p.or(depth + 1)
		if err != nil {
			return nil, err
		}
		if c := p.peek(); c == nil || c.kind != tokClose {
			return nil, fmt.Errorf("%w: at byte %d: '(' is never closed", ErrInvalid, t.at)
		}
		p.pos++
		return x, nil
	}
	return p.cmp()
}

func (p *parser) cmp() (node, error) {
	t := p.peek()
	if t.kind != tokWord {
		return nil, fmt.Errorf("%w: at byte %d: want a column, have %q", ErrInvalid, t.at, t.text)
	}
	col, ok := columns[strings.ToLower(t.text)]
	if !ok {
		return nil, fmt.Errorf("%w: at byte %d: %q is not a column a filter may use (%s)", ErrInvalid, t.at, t.text, strings.Join(Columns(), ", "))
	}
	name := strings.ToLower(t.text)
	p.pos++
	opTok := p.peek()
	if opTok == nil {
		return nil, fmt.Errorf("%w: after %s at byte %d: want an operator", ErrInvalid, name, t.at)
	}
	op := opTok.text
	switch {
	case opTok.kind == tokOp:
	case opTok.kind == tokWord && strings.EqualFold(op, "contains"):
		op = "contains"
	default:
		return nil, fmt.Errorf("%w: at byte %d: want an operator (= != < <= > >= contains) after %s, have %q", ErrInvalid, opTok.at, name, op)
	}
	p.pos++
	v := p.peek()
	if v == nil || (v.kind != tokWord && v.kind != tokText) {
		return nil, fmt.Errorf("%w: at byte %d: want a value after %s %s", ErrInvalid, opTok.at, name, op)
	}
	p.pos++
	value, err := typed(name, col.kind, col.max, op, v)
	if err != nil {
		return nil, err
	}
	return &cmpNode{column: name, op: op, value: value, kind: col.kind}, nil
}

// typed checks v against the column and operator and returns the value to
// bind.
func typed(name string, k kind, maxU uint64, op string, v *token) (any, error) {
	bad := func(why string) error {
		return fmt.Errorf("%w: at byte %d: %s %s %q: %s", ErrInvalid, v.at, name, op, v.text, why)
	}
	ordered := op != "=" && op != "!="
	switch k {
	case kindText:
		if ordered && op != "contains" {
			return nil, bad("text compares with =, != or contains")
		}
		return v.text, nil
	case kindAddr:
		if ordered {
			return nil, bad("addresses compare with = or !=")
		}
		a, err := netip.ParseAddr(v.text)
		if err != nil || a.Zone() != "" {
			return nil, bad("want an IPv4 or IPv6 address")
		}
		b := a.As16() // IPv4 mapped into IPv6, as the column stores it
		return hex.EncodeToString(b[:]), nil
	case kindInt:
		if op == "contains" {
			return nil, bad("numbers compare with = != < <= > >=")
		}
		n, err := strconv.ParseInt(v.text, 10, 16)
		if err != nil || v.kind != tokWord {
			return nil, bad("want a whole number from -32768 to 32767")
		}
		return n, nil
	default: // kindUint, kindProto
		if op == "contains" {
			return nil, bad("numbers compare with = != < <= > >=")
		}
		if k == kindProto && v.kind == tokWord {
			if n, ok := protocols[strings.ToLower(v.text)]; ok {
				return n, nil
			}
		}
		n, err := strconv.ParseUint(v.text, 10, 64)
		if err != nil || v.kind != tokWord || n > maxU {
			return nil, bad(fmt.Sprintf("want a whole number from 0 to %d", maxU))
		}
		return n, nil
	}
}
