package flowstore

import (
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
)

// CommunityID returns the Community ID v1 (seed 0) of a flow, so records can
// be joined with Zeek, Suricata or anything else that computes it. k is
// the originator's direction; IPv4 is hashed as 4-byte addresses.
func CommunityID(k FlowKey) string {
	alen := 16
	if k.IPVersion == 4 {
		alen = 4
	}
	src, dst := k.Src[16-alen:], k.Dst[16-alen:]
	sp, dp := k.SrcPort, k.DstPort
	oneWay := false
	switch {
	case k.Proto == 1 && k.IPVersion == 4:
		sp, dp, oneWay = icmpPorts(icmp4Pairs, sp, dp)
	case k.Proto == 58:
		sp, dp, oneWay = icmpPorts(icmp6Pairs, sp, dp)
	}
	hasPorts := k.Proto == 6 || k.Proto == 17 || k.Proto == 132 || k.Proto == 1 || k.Proto == 58
	// Order the endpoints so both directions hash alike; a one-way ICMP
	// message is ordered by address only.
	c := bytes.Compare(src, dst)
	if c > 0 || (c == 0 && !oneWay && sp > dp) {
		src, dst, sp, dp = dst, src, dp, sp
	}
	var buf [2 + 16 + 16 + 2 + 4]byte
	b := buf[:2] // seed 0
	b = append(b, src...)
	b = append(b, dst...)
	b = append(b, k.Proto, 0)
	if hasPorts {
		b = binary.BigEndian.AppendUint16(b, sp)
		b = binary.BigEndian.AppendUint16(b, dp)
	}
	sum := sha1.Sum(b)
	return "1:" + base64.StdEncoding.EncodeToString(sum[:])
}

var icmp4Pairs = map[uint16]uint16{8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 10: 9, 9: 10, 17: 18, 18: 17}
var icmp6Pairs = map[uint16]uint16{128: 129, 129: 128, 133: 134, 134: 133, 135: 136, 136: 135, 130: 131, 131: 130, 144: 145, 145: 144, 146: 147, 147: 146, 139: 140, 140: 139}

// icmpPorts maps ICMP type and code to Community ID ports: a type with a
// counterpart uses it as the destination port, others the code and are
// one-way.
func icmpPorts(pairs map[uint16]uint16, typ, code uint16) (uint16, uint16, bool) {
	if peer, ok := pairs[typ]; ok {
		return typ, peer, false
	}
	return typ, code, true
}
