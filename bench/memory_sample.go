package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// sample reads the child's VmRSS.
func (c *child) sample() {
	if c.exited() {
		return
	}
	rss, _, err := procMem(c.cmd.Process.Pid)
	if err != nil {
		return
	}
	c.mu.Lock()
	c.mem.MaxSampledRSS = max(c.mem.MaxSampledRSS, rss)
	c.mem.Samples++
	c.mu.Unlock()
}

// heapInuse is the Go collector's heap-in-use gauge, which both sinks
// serve.
const heapInuse = "go_memstats_heap_inuse_bytes"

var scrapeClient = &http.Client{Timeout: time.Second}

// scrape reads the child's open objects/flows gauge.
func (c *child) scrape() {
	if c.exited() {
		return
	}
	resp, err := scrapeClient.Get(c.metricsURL)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for line := range bytes.Lines(raw) {
		name, v, ok := strings.Cut(string(bytes.TrimSpace(line)), " ")
		if !ok || (name != c.gauge && name != heapInuse) {
			continue
		}
		x, err := strconv.ParseFloat(v, 64)
		if err != nil {
			continue
		}
		if name == heapInuse {
			c.mem.PeakHeap = max(c.mem.PeakHeap, int64(x))
		} else {
			c.mem.PeakGauge = max(c.mem.PeakGauge, x)
		}
	}
}

// procMem returns VmRSS and VmHWM of pid, in bytes.
func procMem(pid int) (rss, hwm int64, err error) {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0, err
	}
	for line := range strings.Lines(string(raw)) {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return 0, 0, fmt.Errorf("/proc/%d/status: %s", pid, strings.TrimSpace(line))
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, 0, err
		}
		if k == "VmRSS" {
			rss = kb << 10
		} else {
			hwm = kb << 10
		}
	}
	if rss == 0 || hwm == 0 {
		return 0, 0, fmt.Errorf("/proc/%d/status: no VmRSS or VmHWM", pid)
	}
	return rss, hwm, nil
}
