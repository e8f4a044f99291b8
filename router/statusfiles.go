package router

import (
	"fmt"
	"slices"
	"sort"

	"github.com/capstream/capstream/schemas"
	v3 "github.com/capstream/capstream/schemas/v3"
)

// The size of a PacketCapture's status. etcd refuses a request over 1.5 MiB,
// and a capture can span every node of a cluster, each with up to
// schemas.MaxStatusObjects object names of up to 1 KiB. fitFiles keeps the
// files list under maxFilesBytes by listing fewer names per node, then
// shorter errors, then no directories; the counters (objects, packets,
// bytes, drops) always stay whole, and pcap_objects and the bucket list
// every object.
const (
	// maxFilesBytes bounds the JSON of status.files: a third of etcd's
	// limit, which leaves the spec, the conditions and metadata ample room.
	maxFilesBytes = 512 << 10
	// maxFileNames is the most object names listed over all nodes.
	maxFileNames = 2048
	// maxFileError bounds one node's lastError; the report allows 4 KiB.
	maxFileError = 1024
	// shortFileError is lastError's bound once the list is too large.
	shortFileError = 128
)

// applyReports copies the latest reports of one node into its files entry:
// each source overwrites the fields it owns.
func applyReports(f *v3.PacketCaptureFile, r nodeReports) {
	var lost uint64
	if p := r.producer; p != nil {
		f.State = statePtr(v3.PacketCaptureState(p.State))
		f.Packets = int64(p.Packets)
		f.Bytes = int64(p.Bytes)
		f.LastError = p.LastError
	}
	if s := r.sink; s != nil {
		f.Directory = s.Directory
		f.FileNames = slices.Clone(s.Objects)
		f.Objects = int64(max(s.ObjectCount, uint64(len(s.Objects))))
		if f.LastError == "" {
			f.LastError = s.LastError
		}
		lost = s.LostPackets
	}
	if s := r.flows; s != nil {
		// Both sinks read the same stream: a batch the limits removed
		// before either read it is lost to both, so the larger count is
		// the packets missing from at least one of them.
		lost = max(lost, s.LostPackets)
	}
	// Without the producer's report (a new router, reports still on their
	// way) the drops already in the entry stand: they include the losses.
	if p := r.producer; p != nil {
		f.Drops = int64(p.KernelDrops + p.PublishDrops + lost)
	}
}

// sinkFailures lists the sinks' reported failures, one line per node,
// sink and reason, and the writes they are retrying, one line per node and
// sink, sorted, for the Error condition.
func sinkFailures(reports map[string]nodeReports) []string {
	var out []string
	for node, r := range reports {
		for _, s := range []*schemas.Status{r.sink, r.flows} {
			if s == nil {
				continue
			}
			if s.LastError != "" {
				out = append(out, fmt.Sprintf("%s: %s: %s", node, sinkName(s.Source), s.LastError))
			}
			for _, f := range s.Failures {
				line := fmt.Sprintf("%s: %s: %s, %d batches terminated", node, sinkName(s.Source), f.Reason, f.Batches)
				if f.Message != "" {
					line += ": " + f.Message
				}
				out = append(out, line)
			}
		}
	}
	sort.Strings(out)
	return out
}

func sinkName(s schemas.Source) string {
	if s == schemas.SourceFlowSink {
		return "flow sink"
	}
	return "pcap sink"
}

// fitFiles shortens the entries of files, in place, until their JSON is
// at most maxFilesBytes, in steps that lose the least first: fewer object
// names per node (the most recent are kept: the sink lists them first),
// then shorter errors, then no directory (each is its bucket prefix
// followed by namespace, name and node). It never removes an entry or
// changes a counter.
func fitFiles(files []v3.PacketCaptureFile) {
	if len(files) == 0 {
		return
	}
	for i := range files {
		files[i].LastError = truncate(files[i].LastError, maxFileError)
	}
	perNode := min(schemas.MaxStatusObjects, max(1, maxFileNames/len(files)))
	keepNames(files, perNode)
	for filesSize(files) > maxFilesBytes && perNode > 0 {
		perNode /= 2
		keepNames(files, perNode)
	}
	if filesSize(files) <= maxFilesBytes {
		return
	}
	for i := range files {
		files[i].LastError = truncate(files[i].LastError, shortFileError)
	}
	if filesSize(files) <= maxFilesBytes {
		return
	}
	for i := range files {
		files[i].Directory = ""
	}
}

func keepNames(files []v3.PacketCaptureFile, n int) {
	for i := range files {
		if len(files[i].FileNames) > n {
			files[i].FileNames = files[i].FileNames[:n]
		}
		if len(files[i].FileNames) == 0 {
			files[i].FileNames = nil
		}
	}
}

// filesSize estimates the JSON size of files without encoding it: the
// strings plus a fixed allowance per entry for keys, counters and quotes.
func filesSize(files []v3.PacketCaptureFile) int {
	const perEntry, perName = 160, 3
	n := 0
	for _, f := range files {
		n += perEntry + len(f.Node) + len(f.Directory) + jsonLen(f.LastError)
		for _, name := range f.FileNames {
			n += perName + jsonLen(name)
		}
	}
	return n
}

// jsonLen bounds the encoded length of s: control characters and the
// characters encoding/json escapes for HTML become six bytes.
func jsonLen(s string) int {
	n := len(s)
	for _, r := range s {
		if r < 0x20 || r == '"' || r == '\\' || r == '<' || r == '>' || r == '&' {
			n += 5
		}
	}
	return n
}

// truncate cuts s to at most n bytes, on a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return schemas.ClipText(s, n-3) + "..."
}
