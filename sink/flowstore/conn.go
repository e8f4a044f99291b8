package flowstore

// The per-packet update of a flow and how its record is completed: the TCP
// state and Zeek history, the application hints, conn_state and the
// Community ID.

func (f *flow) closed() bool {
	return f.flags&(fOrigRst|fRespRst) != 0 || f.flags&(fOrigFin|fRespFin) == fOrigFin|fRespFin
}

// History letters, Zeek's: originator upper case, responder lower case.
const histLetters = "SHADFR"

func (t *Table) update(f *flow, fromOrig bool, ts int64, seq uint64) {
	p := &t.pkt
	r := &f.rec
	if ts > r.End || r.End == 0 {
		r.End = ts
	}
	if ts < r.Start {
		r.Start = ts
	}
	if ts > f.lastTs {
		f.lastTs = ts
	}
	if seq > r.LastSeq {
		r.LastSeq = seq
	}
	dir := 1
	if fromOrig {
		dir = 0
		r.OrigPackets++
		r.OrigBytes += uint64(p.WireLen)
		r.OrigPayload += uint64(p.PayloadLen)
		r.OrigFlags |= p.TCPFlags
	} else {
		r.RespPackets++
		r.RespBytes += uint64(p.WireLen)
		r.RespPayload += uint64(p.PayloadLen)
		r.RespFlags |= p.TCPFlags
	}
	if r.Proto == 6 {
		fl := p.TCPFlags
		var letter int = -1
		switch {
		case fl&flagRST != 0:
			letter = 5
		case fl&flagSYN != 0 && fl&flagACK == 0:
			letter = 0
		case fl&flagSYN != 0:
			letter = 1
		case fl&flagFIN != 0:
			letter = 4
		case p.PayloadLen > 0:
			letter = 3
		case fl&flagACK != 0:
			letter = 2
		}
		if letter >= 0 && f.hist[dir]&(1<<letter) == 0 && int(f.histLen) < len(f.histBuf) {
			f.hist[dir] |= 1 << letter
			c := histLetters[letter]
			if !fromOrig {
				c += 'a' - 'A'
			}
			f.histBuf[f.histLen] = c
			f.histLen++
		}
		// Data also counts as 'D' even with FIN or PSH set.
		if letter != 3 && p.PayloadLen > 0 && f.hist[dir]&(1<<3) == 0 && int(f.histLen) < len(f.histBuf) {
			f.hist[dir] |= 1 << 3
			c := byte('D')
			if !fromOrig {
				c = 'd'
			}
			f.histBuf[f.histLen] = c
			f.histLen++
		}
		switch {
		case fromOrig && fl&flagSYN != 0 && fl&flagACK == 0:
			f.flags |= fOrigSyn
		case !fromOrig && fl&flagSYN != 0 && fl&flagACK != 0:
			f.flags |= fRespSynAck
		case !fromOrig && fl&flagSYN != 0:
			f.flags |= fRespSyn
		}
		if fl&flagFIN != 0 {
			if fromOrig {
				f.flags |= fOrigFin
			} else {
				f.flags |= fRespFin
			}
		}
		if fl&flagRST != 0 {
			if fromOrig {
				f.flags |= fOrigRst
			} else {
				f.flags |= fRespRst
			}
		}
	}
	if len(p.Payload) > 0 && f.hintTries < 4 {
		t.hints(f, fromOrig)
	}
}

// hints looks at the first few payloads of a flow only: the hints live in
// the opening messages, and it keeps the cost bounded on bulk transfers.
func (t *Table) hints(f *flow, fromOrig bool) {
	p := &t.pkt
	r := &f.rec
	f.hintTries++
	switch r.Proto {
	case 17:
		if r.OrigPort == 53 || r.RespPort == 53 || r.OrigPort == 5353 || r.RespPort == 5353 {
			if name, rcode, resp, ok := dnsHint(p.Payload); ok {
				if r.DNSQuery == "" {
					r.DNSQuery = name
				}
				if resp {
					r.DNSRcode = rcode
					f.dnsDone = true
				}
			}
		}
	case 6:
		if !fromOrig {
			return
		}
		if r.RespPort == 53 && len(p.Payload) > 2 && !f.dnsDone {
			if name, _, _, ok := dnsHint(p.Payload[2:]); ok && r.DNSQuery == "" {
				r.DNSQuery = name
			}
		}
		if !f.tlsDone {
			if sni, ok := tlsSNI(p.Payload); ok {
				r.TLSSNI, f.tlsDone = sni, true
				return
			}
		}
		if !f.httpDone {
			if host, ok := httpHost(p.Payload); ok {
				r.HTTPHost, f.httpDone = host, true
			}
		}
	}
}

// finish completes a record: history, state and Community ID are derived
// once, at the end, instead of per packet.
func (t *Table) finish(f *flow, reason string) Record {
	r := f.rec
	r.History = string(f.histBuf[:f.histLen])
	r.ConnState = connState(f)
	r.CommunityID = CommunityID(FlowKey{Src: r.OrigAddr, Dst: r.RespAddr, SrcPort: r.OrigPort, DstPort: r.RespPort, Proto: r.Proto, IPVersion: r.IPVersion})
	if reason == ReasonActive && r.Proto == 6 && f.closed() {
		reason = ReasonTCPClose
	}
	r.EndReason = reason
	return r
}

// connState is Zeek's conn_state, from what was seen of the handshake and
// teardown; protocols without one are S0 (one way) or SF (answered).
func connState(f *flow) string {
	r := &f.rec
	if r.Proto != 6 {
		if r.RespPackets > 0 {
			return "SF"
		}
		return "S0"
	}
	fl := f.flags
	has := func(b uint16) bool { return fl&b != 0 }
	switch {
	case has(fOrigSyn) && !has(fRespSynAck):
		switch {
		case has(fRespRst):
			return "REJ"
		case has(fOrigRst):
			return "RSTOS0"
		case has(fOrigFin):
			return "SH"
		case r.RespPackets == 0:
			return "S0"
		}
		return "OTH"
	case !has(fOrigSyn) && has(fRespSynAck):
		switch {
		case has(fRespRst):
			return "RSTRH"
		case has(fRespFin):
			return "SHR"
		}
		return "OTH"
	case !has(fOrigSyn):
		return "OTH"
	case has(fOrigRst):
		return "RSTO"
	case has(fRespRst):
		return "RSTR"
	case has(fOrigFin) && has(fRespFin):
		return "SF"
	case has(fOrigFin):
		return "S2"
	case has(fRespFin):
		return "S3"
	}
	return "S1"
}
