package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/capstream/capstream/sink/sinktest"
)

// toolRun is one reference tool's measurement over the workload.
type toolRun struct {
	// Name says what ran, e.g. "tcpdump -r -w".
	Name string
	// Wall is the median wall time of the runs.
	Wall time.Duration
	// CPU is user plus system time of the median run.
	CPU time.Duration
	// Flows is the flow count the tool reported, when it reports flows.
	Flows int
	// Fixed is the tool's wall time on a pcap with no packets, when
	// measured: start-up and shut-down cost included in Wall.
	Fixed time.Duration
	// Err is why the tool could not be measured (not installed, failed);
	// the table shows n/a for it.
	Err error
}

// timeTool runs args reps times and keeps the run with the median wall
// time, and its output. before, if set, runs ahead of each run, untimed
// (it removes the previous output file).
func timeTool(name string, reps int, before func(), args ...string) (toolRun, []byte) {
	r := toolRun{Name: name}
	if _, err := exec.LookPath(args[0]); err != nil {
		r.Err = err
		return r, nil
	}
	type run struct {
		wall, cpu time.Duration
		out       []byte
	}
	var runs []run
	for range reps {
		if before != nil {
			before()
		}
		cmd := exec.Command(args[0], args[1:]...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		t0 := time.Now()
		err := cmd.Run()
		wall := time.Since(t0)
		if err != nil {
			r.Err = fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, lastLine(out.String()))
			return r, nil
		}
		runs = append(runs, run{wall, cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(), out.Bytes()})
	}
	slices.SortFunc(runs, func(a, b run) int { return int(a.wall - b.wall) })
	m := runs[len(runs)/2]
	r.Wall, r.CPU = m.wall, m.cpu
	return r, m.out
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// references measures the reference tools on the workload, in dir:
//   - tcpdump -r in -w out, the copy limit: reading and writing the same
//     records is the least any pcap store has to do;
//   - argus -r in -w out, flow extraction by a dedicated flow meter;
//   - tshark conversations (tcp and udp), optional because it is slow.
func references(dir string, w workload, reps int, tshark bool) (copyRun, argusRun, tsharkRun toolRun) {
	out := filepath.Join(dir, "copy.pcap")
	copyRun, _ = timeTool("tcpdump -r in -w out", reps, func() { _ = os.Remove(out) }, "tcpdump", "-r", w.Path, "-w", out)
	_ = os.Remove(out)

	aout := filepath.Join(dir, "flows.argus")
	argusRun, _ = timeTool("argus -r in -w out", reps, func() { _ = os.Remove(aout) }, "argus", "-r", w.Path, "-w", aout)
	if argusRun.Err == nil {
		// ra prints one line per flow record; -L -1 drops the header and
		// the filter argus's own management (start/stop) records.
		if o, err := exec.Command("ra", "-n", "-L", "-1", "-r", aout, "-", "not", "man").Output(); err == nil {
			argusRun.Flows = bytes.Count(o, []byte("\n"))
		}
	}
	_ = os.Remove(aout)
	if argusRun.Err == nil {
		// argus runs for about a second whatever the input: time it on a
		// file with no packets so the report shows that floor.
		empty := filepath.Join(dir, "empty.pcap")
		if err := writeEmptyPcap(empty); err == nil {
			idle, _ := timeTool("argus (no packets)", 1, func() { _ = os.Remove(aout) }, "argus", "-r", empty, "-w", aout)
			argusRun.Fixed = idle.Wall
		}
		_ = os.Remove(aout)
	}

	tsharkRun = toolRun{Name: "tshark -z conv,tcp -z conv,udp", Err: errSkipped}
	if tshark {
		// One run: it is the slowest tool by far.
		var o []byte
		tsharkRun, o = timeTool(tsharkRun.Name, 1, nil, "tshark", "-n", "-r", w.Path, "-q", "-z", "conv,tcp", "-z", "conv,udp")
		tsharkRun.Flows = bytes.Count(o, []byte("<->"))
	}
	return copyRun, argusRun, tsharkRun
}

// writeEmptyPcap writes a pcap file header and no records.
func writeEmptyPcap(path string) error {
	return sinktest.WritePcap(path, nil)
}
