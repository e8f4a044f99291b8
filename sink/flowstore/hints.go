package flowstore

import (
	"bytes"
	"encoding/binary"
)

// The L7 hints are parsed by hand from the first payloads of a flow: each
// parser looks at one packet, bounds every read, and gives up at the first
// surprise, so a hint costs a few comparisons and never an allocation
// unless it is found.

const maxHintLen = 255

// dnsHint extracts the query name and, for a response, the rcode from a DNS
// message (UDP payload, or TCP payload after its 2-byte length).
func dnsHint(p []byte) (name string, rcode int16, isResponse, ok bool) {
	if len(p) < 12 {
		return "", 0, false, false
	}
	flags := binary.BigEndian.Uint16(p[2:4])
	qd := binary.BigEndian.Uint16(p[4:6])
	if qd == 0 || flags&0x7800 != 0 { // standard queries only
		return "", 0, false, false
	}
	isResponse = flags&0x8000 != 0
	rcode = int16(flags & 0x000f)
	var sb [maxHintLen]byte
	n := 0
	off := 12
	for {
		if off >= len(p) {
			return "", 0, false, false
		}
		l := int(p[off])
		off++
		if l == 0 {
			break
		}
		if l&0xc0 != 0 || off+l > len(p) || n+l+1 > maxHintLen {
			return "", 0, false, false // the question never uses compression
		}
		if n > 0 {
			sb[n] = '.'
			n++
		}
		n += copy(sb[n:], p[off:off+l])
		off += l
	}
	if n == 0 {
		return ".", rcode, isResponse, true
	}
	return string(sb[:n]), rcode, isResponse, true
}

// tlsSNI extracts the server name from a TLS ClientHello that starts the
// payload and fits in it (the common case: one segment).
func tlsSNI(p []byte) (string, bool) {
	// Record header: type 22 (handshake), version 3.x, length.
	if len(p) < 9 || p[0] != 22 || p[1] != 3 || p[5] != 1 { // ClientHello
		return "", false
	}
	// The record must hold at least the handshake header (type, length)
	// that p[5:9] was read as; a shorter one is not a ClientHello.
	rl := int(binary.BigEndian.Uint16(p[3:5]))
	if rl < 4 {
		return "", false
	}
	h := p[9:]
	if rl+5 < len(p) {
		h = p[9 : 5+rl]
	}
	// client_version(2) random(32)
	off := 34
	skip := func(lenBytes int) bool {
		if off+lenBytes > len(h) {
			return false
		}
		var l int
		if lenBytes == 1 {
			l = int(h[off])
		} else {
			l = int(binary.BigEndian.Uint16(h[off:]))
		}
		off += lenBytes + l
		return off <= len(h)
	}
	if !skip(1) || !skip(2) || !skip(1) { // session id, cipher suites, compression
		return "", false
	}
	if off+2 > len(h) {
		return "", false
	}
	end := off + 2 + int(binary.BigEndian.Uint16(h[off:]))
	off += 2
	if end > len(h) {
		end = len(h)
	}
	for off+4 <= end {
		typ := binary.BigEndian.Uint16(h[off:])
		l := int(binary.BigEndian.Uint16(h[off+2:]))
		off += 4
		if off+l > end {
			return "", false
		}
		if typ == 0 { // server_name
			e := h[off : off+l]
			if len(e) < 5 || e[2] != 0 { // list length(2), type host_name(0)
				return "", false
			}
			nl := int(binary.BigEndian.Uint16(e[3:5]))
			if 5+nl > len(e) || nl == 0 || nl > maxHintLen {
				return "", false
			}
			return string(e[5 : 5+nl]), true
		}
		off += l
	}
	return "", false
}

var httpMethods = [][]byte{[]byte("GET "), []byte("POST "), []byte("HEAD "), []byte("PUT "), []byte("DELETE "), []byte("OPTIONS "), []byte("PATCH "), []byte("CONNECT ")}

// httpHost extracts the Host header of an HTTP/1.x request that starts the
// payload.
func httpHost(p []byte) (string, bool) {
	found := false
	for _, m := range httpMethods {
		if bytes.HasPrefix(p, m) {
			found = true
			break
		}
	}
	if !found {
		return "", false
	}
	for {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			return "", false
		}
		line := bytes.TrimRight(p[:i], "\r")
		p = p[i+1:]
		if len(line) == 0 {
			return "", false // end of headers
		}
		if len(line) > 5 && line[4] == ':' && bytes.EqualFold(line[:4], []byte("host")) {
			h := bytes.TrimSpace(line[5:])
			if len(h) == 0 || len(h) > maxHintLen {
				return "", false
			}
			return string(h), true
		}
	}
}
