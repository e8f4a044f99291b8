package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// selfCPU is the user plus system CPU time this process has used, all
// threads: producer, embedded JetStream, both sinks and the harness's own
// polling.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times. It is 100 on
// every Linux architecture Go supports; reading sysconf would need cgo.
const clockTicks = 100

// servers are the out-of-process services the pipeline writes to, by the
// name of the pid file deploy/dev/deps.sh writes for each. etcd and
// kube-apiserver are left out: the benchmark does not use the router.
var servers = []string{"clickhouse", "s3"}

// serverPids reads the pids of servers from the pids directory beside the
// env file; services without a readable pid file are left out.
func serverPids(envFile string) map[string]int {
	pids := map[string]int{}
	dir := filepath.Join(filepath.Dir(envFile), "pids")
	for _, name := range servers {
		raw, err := os.ReadFile(filepath.Join(dir, name+".pid"))
		if err != nil {
			continue
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(raw))); err == nil && procCPU(pid) >= 0 {
			pids[name] = pid
		}
	}
	return pids
}

// procCPU is utime+stime of pid from /proc/<pid>/stat, or -1 if it cannot
// be read. Children are not counted: both servers do their work in
// threads of the one process.
func procCPU(pid int) time.Duration {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return -1
	}
	// The command name (field 2) may hold spaces; fields after the last
	// ')' start with field 3 (state). utime and stime are fields 14, 15.
	s := string(raw)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return -1
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return -1
	}
	return time.Duration(ut+st) * time.Second / clockTicks
}

// cpuSample is the CPU used so far by this process and by each server.
type cpuSample struct {
	self    time.Duration
	servers map[string]time.Duration
}

func sampleCPU(pids map[string]int) cpuSample {
	s := cpuSample{self: selfCPU(), servers: map[string]time.Duration{}}
	for name, pid := range pids {
		if d := procCPU(pid); d >= 0 {
			s.servers[name] = d
		}
	}
	return s
}

// since returns the CPU used between s0 and s: in this process, and per
// server.
func (s cpuSample) since(s0 cpuSample) (self time.Duration, servers map[string]time.Duration) {
	servers = map[string]time.Duration{}
	for name, d := range s.servers {
		if d0, ok := s0.servers[name]; ok {
			servers[name] = d - d0
		}
	}
	return s.self - s0.self, servers
}
