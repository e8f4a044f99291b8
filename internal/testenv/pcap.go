package testenv

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/pcapgo"
)

// PcapRecord is one record of a pcap file.
type PcapRecord struct {
	// Data is the captured bytes.
	Data []byte
	// Info holds the timestamp and the captured and wire lengths.
	Info gopacket.CaptureInfo
}

// ReadPcap reads every record of the pcap file at path. On an error past
// the file header it returns the records read before it together with the
// error, so a caller can still look at a file its writer was killed in the
// middle of (tcpdump on SIGINT).
func ReadPcap(path string) ([]PcapRecord, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r, err := pcapgo.NewReader(bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("pcap header of %s: %w", path, err)
	}
	var out []PcapRecord
	for {
		data, ci, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("pcap record %d of %s: %w", len(out), path, err)
		}
		out = append(out, PcapRecord{Data: data, Info: ci})
	}
}
