package pcapmerge

import (
	"bytes"
	"io"
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

// countingClose tracks how many inputs are open at once.
type countingClose struct {
	io.ReadCloser
	open *int
}

func (c countingClose) Close() error {
	*c.open--
	return c.ReadCloser.Close()
}

// TestMergeFilesOpenBound: however many files there are, no more than
// fanIn inputs are open at any time, and every one is closed.
func TestMergeFilesOpenBound(t *testing.T) {
	in := t.TempDir()
	var files []string
	for i := range 37 {
		p := filepath.Join(in, strconv.Itoa(i)+".pcap")
		if err := os.WriteFile(p, pcapOf(t, layers.LinkTypeEthernet, true, int64(i%9), int64(100-i)), 0o600); err != nil {
			t.Fatal(err)
		}
		files = append(files, p)
	}
	open, peak := 0, 0
	defer func(orig func(string) (io.ReadCloser, error)) { openInput = orig }(openInput)
	openInput = func(name string) (io.ReadCloser, error) {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		open++
		peak = max(peak, open)
		return countingClose{f, &open}, nil
	}
	for _, fanIn := range []int{2, 4, 10} {
		open, peak = 0, 0
		st, err := MergeFiles(filepath.Join(t.TempDir(), "out.pcap"), files, fanIn)
		if err != nil || st.Packets != 74 {
			t.Fatalf("fan-in %d: %+v %v", fanIn, st, err)
		}
		if peak > fanIn || open != 0 {
			t.Errorf("fan-in %d: up to %d inputs open at once, %d left open", fanIn, peak, open)
		}
	}
}

// TestCheckOutput: an output MergeFiles cannot write is refused before
// any input is read, and the check leaves nothing behind.
func TestCheckOutput(t *testing.T) {
	dir := t.TempDir()
	existing := filepath.Join(dir, "existing.pcap")
	if err := os.WriteFile(existing, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	isDir := filepath.Join(dir, "dir.pcap")
	if err := os.Mkdir(isDir, 0o755); err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		out string
		ok  bool
	}{
		"new file":            {filepath.Join(dir, "new.pcap"), true},
		"existing file":       {existing, true},
		"a directory":         {isDir, false},
		"under a file":        {filepath.Join(existing, "x.pcap"), false},
		"missing directory":   {filepath.Join(dir, "nope", "x.pcap"), false},
		"name over 255":       {filepath.Join(dir, strings.Repeat("n", 256)+".pcap"), false},
		"name of 255 exactly": {filepath.Join(dir, strings.Repeat("n", 250)+".pcap"), true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if err := CheckOutput(tc.out); (err == nil) != tc.ok {
				t.Errorf("CheckOutput(%s) = %v, want ok %v", tc.out, err, tc.ok)
			}
		})
	}
	// Nothing created stays, and the existing file is untouched.
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("entries after the checks: %v, want existing.pcap and dir.pcap", entries)
	}
	if b, _ := os.ReadFile(existing); string(b) != "old" {
		t.Errorf("existing file now %q", b)
	}
	// MergeFiles checks first: a bad output fails without opening inputs.
	defer func(orig func(string) (io.ReadCloser, error)) { openInput = orig }(openInput)
	openInput = func(name string) (io.ReadCloser, error) {
		t.Errorf("input %s opened for a bad output", name)
		return os.Open(name)
	}
	if _, err := MergeFiles(isDir, []string{existing}, 4); err == nil {
		t.Error("merge into a directory accepted")
	}
}
