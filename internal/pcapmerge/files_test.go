package pcapmerge

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/gopacket/gopacket/layers"
)

// TestMergeFilesFanIn: merging 23 files with at most 2, 3 or 5 open at a
// time, in rounds through temporary files, gives the bytes of merging them
// all at once (ties included), and leaves no temporary file behind.
func TestMergeFilesFanIn(t *testing.T) {
	in := t.TempDir()
	var files []string
	for i := range 23 {
		// Interleaved times, with ties across files.
		p := filepath.Join(in, strconv.Itoa(i)+".pcap")
		data := pcapOf(t, layers.LinkTypeEthernet, true, int64(1000+i%5), int64(2000+i), int64(3000-i%7))
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		files = append(files, p)
	}
	outDir := t.TempDir()
	once := filepath.Join(outDir, "once.pcap")
	st, err := MergeFiles(once, files, 100)
	if err != nil || st.Packets != 69 {
		t.Fatalf("merge at once: %+v %v", st, err)
	}
	want, err := os.ReadFile(once)
	if err != nil {
		t.Fatal(err)
	}
	for _, fanIn := range []int{2, 3, 5} {
		out := filepath.Join(outDir, "rounds-"+strconv.Itoa(fanIn)+".pcap")
		st, err := MergeFiles(out, files, fanIn)
		if err != nil || st.Packets != 69 {
			t.Fatalf("fan-in %d: %+v %v", fanIn, st, err)
		}
		got, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("fan-in %d: the merge differs from merging at once", fanIn)
		}
	}
	left, _ := filepath.Glob(filepath.Join(outDir, ".merge-*"))
	if len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
	// A bad input fails the merge and still leaves nothing behind.
	bad := filepath.Join(in, "bad.pcap")
	if err := os.WriteFile(bad, []byte("not a pcap"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := MergeFiles(filepath.Join(outDir, "bad-out.pcap"), append(files, bad), 4); err == nil || !strings.Contains(err.Error(), "bad.pcap") {
		t.Errorf("merge with a bad input: %v, want an error naming it", err)
	}
	if left, _ := filepath.Glob(filepath.Join(outDir, ".merge-*")); len(left) != 0 {
		t.Errorf("temporary files left after a failed merge: %v", left)
	}
}
