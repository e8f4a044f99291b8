package sinktest

import (
	"bufio"
	"bytes"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
)

// Conv is one bidirectional conversation as tshark reports it: A is the
// left endpoint (host:port), AtoB the frames and bytes from A to B.
type Conv struct {
	Proto                 string
	A, B                  string
	AtoBFrames, AtoBBytes uint64
	BtoAFrames, BtoABytes uint64
}

// TsharkConversations runs `tshark -q -z conv,tcp -z conv,udp` on a pcap
// and parses the tables. Byte counts must be printed as "N bytes" (tshark
// switches to kB and MB for large ones; tests keep flows small).
func TsharkConversations(path string) ([]Conv, error) {
	out, err := exec.Command("tshark", "-n", "-r", path, "-q", "-z", "conv,tcp", "-z", "conv,udp").Output()
	if err != nil {
		return nil, fmt.Errorf("tshark: %w", err)
	}
	var convs []Conv
	proto := ""
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "TCP Conversations"):
			proto = "tcp"
			continue
		case strings.HasPrefix(line, "UDP Conversations"):
			proto = "udp"
			continue
		}
		f := strings.Fields(line)
		if len(f) < 12 || f[1] != "<->" {
			continue
		}
		num := func(s string) uint64 {
			n, perr := strconv.ParseUint(strings.ReplaceAll(s, ",", ""), 10, 64)
			if perr != nil && err == nil {
				err = fmt.Errorf("tshark field %q in %q: %w", s, line, perr)
			}
			return n
		}
		if f[5] != "bytes" || f[8] != "bytes" {
			return nil, fmt.Errorf("tshark printed sizes with units: %q", line)
		}
		convs = append(convs, Conv{
			Proto: proto, A: f[0], B: f[2],
			BtoAFrames: num(f[3]), BtoABytes: num(f[4]),
			AtoBFrames: num(f[6]), AtoBBytes: num(f[7]),
		})
	}
	return convs, err
}

// TcpdumpPackets reads a pcap with `tcpdump -r -nn -S -tt --nano -x` and returns
// one string per packet: the summary line (absolute TCP sequence numbers,
// so a packet reads the same in any file) and its hex dump. Comparing these
// between an input pcap and the objects a sink wrote shows that the packets
// (time, length and every captured byte) came out unchanged.
func TcpdumpPackets(path string) ([]string, error) {
	out, err := exec.Command("tcpdump", "-r", path, "-nn", "-S", "-tt", "--nano", "-x").Output()
	if err != nil {
		return nil, fmt.Errorf("tcpdump -r %s: %w", path, err)
	}
	var pkts []string
	var cur strings.Builder
	for _, line := range strings.Split(string(out), "\n") {
		if line == "" {
			continue
		}
		if line[0] != '\t' && line[0] != ' ' && cur.Len() > 0 {
			pkts = append(pkts, cur.String())
			cur.Reset()
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
	}
	if cur.Len() > 0 {
		pkts = append(pkts, cur.String())
	}
	return pkts, nil
}
