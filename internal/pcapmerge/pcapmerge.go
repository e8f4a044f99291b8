// Package pcapmerge merges pcap files into one time-ordered pcap, the way
// `capstream captured-packets copy --merge` hands a capture spread over
// nodes, interfaces and rolled objects to Wireshark as a single file.
//
// Merge streams: it holds one packet per input in memory, never whole
// files, so it merges captures larger than memory.
package pcapmerge

import (
	"container/heap"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// Input is one pcap stream to merge; Name is used in errors.
type Input struct {
	Name   string
	Reader io.Reader
}

// Stats describes a merge.
type Stats struct {
	Packets uint64
	Bytes   uint64
}

type head struct {
	idx  int
	r    *pcapgo.Reader
	ci   gopacket.CaptureInfo
	data []byte
}

type queue []*head

func (q queue) Len() int { return len(q) }
func (q queue) Less(i, j int) bool {
	if !q[i].ci.Timestamp.Equal(q[j].ci.Timestamp) {
		return q[i].ci.Timestamp.Before(q[j].ci.Timestamp)
	}
	return q[i].idx < q[j].idx // stable: earlier inputs first on ties
}
func (q queue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *queue) Push(x any)   { *q = append(*q, x.(*head)) }
func (q *queue) Pop() any {
	old := *q
	h := old[len(old)-1]
	*q = old[:len(old)-1]
	return h
}

// ErrLinkTypeMismatch is returned when inputs have different link types,
// which one classic pcap cannot hold.
var ErrLinkTypeMismatch = errors.New("inputs have different link types")

// Merge writes every packet of the inputs to w as one nanosecond pcap in
// timestamp order. Inputs may be microsecond or nanosecond pcaps. An input
// that is not a pcap, or is cut short, is an error naming it.
func Merge(w io.Writer, inputs []Input) (Stats, error) {
	var st Stats
	var q queue
	var link layers.LinkType
	var snap uint32
	for i, in := range inputs {
		r, err := pcapgo.NewReader(in.Reader)
		if err != nil {
			return st, fmt.Errorf("read %s: %w", in.Name, err)
		}
		if i == 0 {
			link = r.LinkType()
		} else if r.LinkType() != link {
			return st, fmt.Errorf("%s has link type %s, %s has %s: %w", inputs[0].Name, link, in.Name, r.LinkType(), ErrLinkTypeMismatch)
		}
		snap = max(snap, r.Snaplen())
		h := &head{idx: i, r: r}
		ok, err := h.next()
		if err != nil {
			return st, fmt.Errorf("read %s: %w", in.Name, err)
		}
		if ok {
			q = append(q, h)
		}
	}
	if len(inputs) == 0 {
		link = layers.LinkTypeEthernet
	}
	if snap == 0 {
		snap = 262144
	}
	out := pcapgo.NewWriterNanos(w)
	if err := out.WriteFileHeader(snap, link); err != nil {
		return st, fmt.Errorf("write header: %w", err)
	}
	heap.Init(&q)
	for q.Len() > 0 {
		h := q[0]
		if err := out.WritePacket(h.ci, h.data); err != nil {
			return st, fmt.Errorf("write packet: %w", err)
		}
		st.Packets++
		st.Bytes += uint64(len(h.data))
		ok, err := h.next()
		if err != nil {
			return st, fmt.Errorf("read %s: %w", inputs[h.idx].Name, err)
		}
		if ok {
			heap.Fix(&q, 0)
		} else {
			heap.Pop(&q)
		}
	}
	return st, nil
}

// next reads the input's next packet; false at a clean end of file.
func (h *head) next() (bool, error) {
	data, ci, err := h.r.ReadPacketData()
	if errors.Is(err, io.EOF) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	// ReadPacketData reuses no buffer, but copy defensively would cost;
	// pcapgo allocates a fresh slice per packet, so keeping it is safe.
	h.ci, h.data = ci, data
	return true, nil
}

// MaxOpen is how many files MergeFiles reads at once by default: far
// below the usual limit of 1024 open files, whatever the number of
// objects a capture has.
const MaxOpen = 256

// openInput opens one input of a round; tests count what is open through
// it.
var openInput = func(name string) (io.ReadCloser, error) { return os.Open(name) }

// CheckOutput reports whether MergeFiles can write out, without reading
// any input: out is not a directory, its directory takes new files (the
// rounds' temporary files go there), and the file system accepts its name
// (some take less than 255 bytes). An existing file is fine: the merge
// replaces it once complete. Nothing it creates is left behind.
func CheckOutput(out string) error {
	if fi, err := os.Stat(out); err == nil && fi.IsDir() {
		return fmt.Errorf("output %s: is a directory", out)
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), ".merge-*")
	if err != nil {
		return fmt.Errorf("output %s: %w", out, err)
	}
	_ = tmp.Close()
	_ = os.Remove(tmp.Name())
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	switch {
	case err == nil:
		_ = f.Close()
		_ = os.Remove(out)
	case errors.Is(err, fs.ErrExist):
	default:
		return fmt.Errorf("output %s: %w", out, err)
	}
	return nil
}

// MergeFiles merges the pcap files into the file out, written as a
// temporary file in out's directory and renamed into place once complete.
// It reads at most fanIn files at once (MaxOpen when fanIn < 2), so it
// holds fanIn inputs and one output open: more files are first merged in
// consecutive groups of fanIn into temporary files, round after round,
// which keeps Merge's order exactly (ties go to the earlier file).
// Temporary files are removed whatever happens. out is checked
// (CheckOutput) before any input is read.
func MergeFiles(out string, files []string, fanIn int) (Stats, error) {
	if fanIn < 2 {
		fanIn = MaxOpen
	}
	if err := CheckOutput(out); err != nil {
		return Stats{}, err
	}
	dir := filepath.Dir(out)
	var temps []string
	defer func() {
		for _, t := range temps {
			_ = os.Remove(t)
		}
	}()
	round := files
	for len(round) > fanIn {
		var next []string
		for i := 0; i < len(round); i += fanIn {
			tmp, _, err := mergeToTemp(dir, round[i:min(i+fanIn, len(round))])
			if tmp != "" {
				temps = append(temps, tmp)
			}
			if err != nil {
				return Stats{}, err
			}
			next = append(next, tmp)
		}
		round = next
	}
	tmp, st, err := mergeToTemp(dir, round)
	if tmp != "" {
		temps = append(temps, tmp)
	}
	if err != nil {
		return st, err
	}
	if err := os.Rename(tmp, out); err != nil {
		return st, fmt.Errorf("merge: %w", err)
	}
	return st, nil
}

// mergeToTemp merges files into a new temporary file in dir and returns
// its name (also on error, once created).
func mergeToTemp(dir string, files []string) (string, Stats, error) {
	var inputs []Input
	for _, f := range files {
		fh, err := openInput(f)
		if err != nil {
			return "", Stats{}, fmt.Errorf("merge: %w", err)
		}
		defer fh.Close()
		inputs = append(inputs, Input{Name: f, Reader: fh})
	}
	tmp, err := os.CreateTemp(dir, ".merge-*")
	if err != nil {
		return "", Stats{}, fmt.Errorf("merge: %w", err)
	}
	st, err := Merge(tmp, inputs)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return tmp.Name(), st, fmt.Errorf("merge: %w", err)
	}
	return tmp.Name(), st, nil
}
