package selector

import (
	"fmt"
	"slices"
	"strings"
)

// SyntaxError describes why and where a selector failed to parse. Callers
// that report selector problems back to users (CRD status, API errors) can
// use Offset to point at the offending byte.
type SyntaxError struct {
	// Offset is the byte offset in Input where the problem was found; it
	// equals len(Input) when the input ended too early.
	Offset int
	// Msg says what was wrong or expected, without position or excerpt.
	Msg string
	// Input is the whole selector that was being parsed.
	Input string
}

// excerptMax bounds how much of the input an error message quotes, so that a
// huge hostile selector does not produce a huge log line.
const excerptMax = 24

// Error formats the error with its offset and a short excerpt of the input
// at that offset. The excerpt is quoted with %q so that newlines, NUL and
// invalid UTF-8 (all of which can cause the error) stay visible and cannot
// corrupt logs.
func (e *SyntaxError) Error() string {
	return fmt.Sprintf("selector: at offset %d: %s, found %s", e.Offset, e.Msg, e.excerpt())
}

// excerpt returns the quoted word at Offset: up to the next space or tab, so
// that the excerpt usually matches the token the parser tripped over.
func (e *SyntaxError) excerpt() string {
	off := min(max(e.Offset, 0), len(e.Input))
	rest := e.Input[off:]
	if rest == "" {
		return "end of input"
	}
	n := 1
	for n < len(rest) && n < excerptMax && rest[n] != ' ' && rest[n] != '\t' {
		n++
	}
	if n == excerptMax && n < len(rest) && rest[n] != ' ' && rest[n] != '\t' {
		return fmt.Sprintf("%q...", rest[:n])
	}
	return fmt.Sprintf("%q", rest[:n])
}

// parser is a recursive-descent parser that tokenizes on demand. Tokenizing
// lazily (rather than producing a token slice first, as Calico does) gives
// the same accepted language, because every valid selector is consumed
// entirely as tokens; it only changes which error is reported first when an
// input has several.
//
// Every parse method skips the whitespace in front of its own tokens and
// leaves pos just after the last byte it consumed.
type parser struct {
	src string
	pos int
}

func (p *parser) errorf(off int, format string, args ...any) error {
	return &SyntaxError{Offset: off, Msg: fmt.Sprintf(format, args...), Input: p.src}
}

func (p *parser) skipWS() {
	for p.pos < len(p.src) && (p.src[p.pos] == ' ' || p.src[p.pos] == '\t') {
		p.pos++
	}
}

func (p *parser) peekIs(s string) bool {
	return strings.HasPrefix(p.src[p.pos:], s)
}

// scanWord consumes the longest run of key bytes at pos. Keys and operator
// words share this alphabet, which is also what gives operator words their
// word boundary: "inx" is one run, so it can never be read as "in".
func (p *parser) scanWord() string {
	start := p.pos
	for p.pos < len(p.src) && isKeyByte(p.src[p.pos]) {
		p.pos++
	}
	return p.src[start:p.pos]
}

// isKeyByte reports whether c may appear in a label key: A-Z a-z 0-9 _ . / -
func isKeyByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '_' || c == '.' || c == '/' || c == '-'
}

// unexpected reports that the byte at pos cannot go where it is. Bytes that
// can never start a token get a message of their own, because a stray
// newline or a lone "=" is a far more likely mistake than a misplaced token
// and the generic "expected X" would hide it.
func (p *parser) unexpected(expected string) error {
	if p.pos >= len(p.src) {
		return p.errorf(p.pos, "expected %s", expected)
	}
	switch c := p.src[p.pos]; {
	case c == '=' && !p.peekIs("=="):
		return p.errorf(p.pos, `invalid lone "=" (equality is "=="); expected %s`, expected)
	case c == '&' && !p.peekIs("&&"):
		return p.errorf(p.pos, `invalid lone "&" (and is "&&"); expected %s`, expected)
	case c == '|' && !p.peekIs("||"):
		return p.errorf(p.pos, `invalid lone "|" (or is "||"); expected %s`, expected)
	case c == '\n' || c == '\r' || c == '\v' || c == '\f' || p.peekIs("\u00a0"):
		return p.errorf(p.pos, "invalid whitespace character (only space and tab are allowed); expected %s", expected)
	case !canStartToken(c):
		return p.errorf(p.pos, "invalid character %q; expected %s", c, expected)
	}
	return p.errorf(p.pos, "expected %s", expected)
}

func canStartToken(c byte) bool {
	return isKeyByte(c) || strings.IndexByte(` 	"'(){},=!&|`, c) >= 0
}

// parseSelector parses the whole input.
func (p *parser) parseSelector() (node, error) {
	p.skipWS()
	if p.pos == len(p.src) {
		// Empty and blank selectors match everything, like all().
		return node{op: opAll}, nil
	}
	n, err := p.parseOr(0)
	if err != nil {
		return node{}, err
	}
	p.skipWS()
	if p.pos != len(p.src) {
		return node{}, p.unexpected(`"&&", "||" or end of input`)
	}
	return n, nil
}

// parseOr parses `and_expr { "||" and_expr }`. depth is the number of
// enclosing parentheses.
func (p *parser) parseOr(depth int) (node, error) {
	return p.parseChain(depth, opOr, "||", p.parseAnd)
}

// parseAnd parses `unary { "&&" unary }`.
func (p *parser) parseAnd(depth int) (node, error) {
	return p.parseChain(depth, opAnd, "&&", p.parseUnary)
}

// parseChain parses one or more operands separated by sep into a single
// n-ary node. Operands that are already chains of the same operator (from
// parentheses) are spliced in: both operators are associative, and a flat
// chain makes the canonical form independent of redundant grouping.
func (p *parser) parseChain(depth int, o op, sep string, operand func(int) (node, error)) (node, error) {
	first, err := operand(depth)
	if err != nil {
		return node{}, err
	}
	p.skipWS()
	if !p.peekIs(sep) {
		return first, nil
	}
	kids := appendFlat(nil, first, o)
	for p.peekIs(sep) {
		p.pos += len(sep)
		n, err := operand(depth)
		if err != nil {
			return node{}, err
		}
		kids = appendFlat(kids, n, o)
		p.skipWS()
	}
	return node{op: o, kids: kids}, nil
}

func appendFlat(kids []node, n node, o op) []node {
	if n.op == o {
		return append(kids, n.kids...)
	}
	return append(kids, n)
}

// parseUnary parses `{ "!" } primary`. The run of "!" is counted in a loop
// instead of by recursion, so it needs no depth limit, and pairs cancel so
// that the tree never holds a double negation.
func (p *parser) parseUnary(depth int) (node, error) {
	negate := false
	for {
		p.skipWS()
		// "!=" is a token of its own and is never a negation, so it
		// is left for parsePrimary to reject.
		if !p.peekIs("!") || p.peekIs("!=") {
			break
		}
		negate = !negate
		p.pos++
	}
	n, err := p.parsePrimary(depth)
	if err != nil || !negate {
		return n, err
	}
	if n.op == opNot {
		// !(!e) is e.
		return n.kids[0], nil
	}
	return node{op: opNot, kids: []node{n}}, nil
}

// parsePrimary parses a parenthesised group, a function or a comparison.
func (p *parser) parsePrimary(depth int) (node, error) {
	p.skipWS()
	if p.pos >= len(p.src) {
		return node{}, p.unexpected("expression")
	}
	start := p.pos
	c := p.src[p.pos]
	switch {
	case c == '(':
		if depth >= MaxNestingDepth {
			return node{}, p.errorf(start, "parentheses nested deeper than %d levels", MaxNestingDepth)
		}
		p.pos++
		n, err := p.parseOr(depth + 1)
		if err != nil {
			return node{}, err
		}
		p.skipWS()
		if !p.peekIs(")") {
			return node{}, p.unexpected(fmt.Sprintf(`")" to close "(" at offset %d`, start))
		}
		p.pos++
		return n, nil
	case isKeyByte(c):
		word := p.scanWord()
		// Function words count only with "(" straight after them;
		// otherwise "has", "all" and "global" are ordinary keys.
		if p.peekIs("(") {
			switch word {
			case "has":
				return p.parseHas()
			case "all":
				return p.parseEmptyCall(opAll, word)
			case "global":
				return p.parseEmptyCall(opGlobal, word)
			}
		}
		if len(word) > MaxKeyLength {
			return node{}, p.errorf(start, "label key longer than %d bytes", MaxKeyLength)
		}
		return p.parseComparison(word)
	case c == '"' || c == '\'':
		return node{}, p.errorf(start, "expected label key before operator, not a string literal")
	}
	return node{}, p.unexpected("expression")
}

// parseHas parses the rest of `has(` key `)`, with pos on the "(".
func (p *parser) parseHas() (node, error) {
	p.pos++
	p.skipWS()
	start := p.pos
	key := p.scanWord()
	if key == "" {
		return node{}, p.unexpected(`label key in "has("`)
	}
	if len(key) > MaxKeyLength {
		return node{}, p.errorf(start, "label key longer than %d bytes", MaxKeyLength)
	}
	p.skipWS()
	if !p.peekIs(")") {
		return node{}, p.unexpected(`")" to close "has("`)
	}
	p.pos++
	return node{op: opHas, key: key}, nil
}

// parseEmptyCall parses the rest of `all(` or `global(` up to `)`, with pos
// on the "(".
func (p *parser) parseEmptyCall(o op, word string) (node, error) {
	p.pos++
	p.skipWS()
	if !p.peekIs(")") {
		return node{}, p.unexpected(fmt.Sprintf(`")" after "%s("`, word))
	}
	p.pos++
	return node{op: o}, nil
}

// parseComparison parses the operator and operand after a label key.
func (p *parser) parseComparison(key string) (node, error) {
	p.skipWS()
	o, err := p.parseOperator(key)
	if err != nil {
		return node{}, err
	}
	n := node{op: o, key: key}
	if o == opIn || o == opNotIn {
		n.set, err = p.parseSet(o)
	} else {
		n.value, err = p.parseString(o)
	}
	return n, err
}

// parseOperator parses a comparison operator. Operator words are only
// recognised here, directly after a key, which is why `in in {"x"}` is the
// key "in" followed by the operator "in".
func (p *parser) parseOperator(key string) (op, error) {
	start := p.pos
	switch {
	case p.peekIs("=="):
		p.pos += 2
		return opEq, nil
	case p.peekIs("!="):
		p.pos += 2
		return opNe, nil
	}
	errNoOp := func() error {
		p.pos = start
		return p.unexpected(fmt.Sprintf("operator after label key %q", excerptKey(key)))
	}
	switch p.scanWord() {
	case "in":
		return opIn, nil
	case "contains":
		return opContains, nil
	case "notin":
		return opNotIn, nil
	case "startswith":
		return opStartsWith, nil
	case "endswith":
		return opEndsWith, nil
	case "not":
		// Two-word operators allow any run of spaces and tabs
		// (including none, handled above) between their words.
		p.skipWS()
		if p.scanWord() == "in" {
			return opNotIn, nil
		}
	case "starts":
		p.skipWS()
		if p.scanWord() == "with" {
			return opStartsWith, nil
		}
	case "ends":
		p.skipWS()
		if p.scanWord() == "with" {
			return opEndsWith, nil
		}
	}
	return 0, errNoOp()
}

// excerptKey shortens a key for use inside an error message.
func excerptKey(key string) string {
	if len(key) > excerptMax {
		return key[:excerptMax] + "..."
	}
	return key
}

// parseString parses the string literal operand of o. Literals have no
// escapes: the value is every byte up to the next matching quote.
func (p *parser) parseString(o op) (string, error) {
	p.skipWS()
	if !p.peekIs(`"`) && !p.peekIs(`'`) {
		return "", p.unexpected(fmt.Sprintf("string literal after %q", opText[o]))
	}
	return p.scanString()
}

// scanString consumes the literal at pos, which must be on a quote.
func (p *parser) scanString() (string, error) {
	q := p.src[p.pos]
	end := strings.IndexByte(p.src[p.pos+1:], q)
	if end < 0 {
		return "", p.errorf(p.pos, "unterminated string literal")
	}
	v := p.src[p.pos+1 : p.pos+1+end]
	p.pos += end + 2
	return v, nil
}

// parseSet parses `{ [ string { "," string } [ "," ] ] }` for operator o and
// returns its elements sorted and deduplicated.
func (p *parser) parseSet(o op) ([]string, error) {
	p.skipWS()
	if !p.peekIs("{") {
		return nil, p.unexpected(fmt.Sprintf(`set literal "{...}" after %q`, opText[o]))
	}
	p.pos++
	p.skipWS()
	var set []string
	if !p.peekIs("}") {
		for {
			p.skipWS()
			if !p.peekIs(`"`) && !p.peekIs(`'`) {
				return nil, p.unexpected("string literal in set")
			}
			v, err := p.scanString()
			if err != nil {
				return nil, err
			}
			set = append(set, v)
			p.skipWS()
			if p.peekIs(",") {
				p.pos++
				p.skipWS()
				if p.peekIs("}") {
					// One trailing comma is allowed.
					break
				}
				continue
			}
			if p.peekIs("}") {
				break
			}
			return nil, p.unexpected(`"," or "}" in set`)
		}
	}
	p.pos++ // the "}"
	slices.Sort(set)
	return slices.Compact(set), nil
}
