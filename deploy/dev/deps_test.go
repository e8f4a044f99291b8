// Package dev holds the scripts that install and run capstream's local
// services; this test checks deps.sh's contract on a private state dir.
package dev

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/capstream/capstream/internal/testenv"
)

// TestDepsUpDown starts a second, private set of services with deps.sh and
// checks that `down` leaves none of the processes it started running and
// removes their data.
func TestDepsUpDown(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts real services")
	}
	dir := filepath.Join(t.TempDir(), "dev")
	env := append(os.Environ(), "CAPSTREAM_DEV_DIR="+dir)
	deps := func(arg string) (string, error) {
		cmd := exec.Command("./deps.sh", arg)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := deps("up"); err != nil {
		t.Cleanup(func() { _, _ = deps("down") })
		if testenv.RequireDeps() {
			t.Fatalf("deps.sh up: %v\n%s", err, out)
		}
		t.Skipf("deps.sh up: %v\n%s", err, out)
	}
	envFile, err := os.ReadFile(filepath.Join(dir, "env"))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{testenv.EnvClickHouseAddr, testenv.EnvS3Endpoint, testenv.EnvS3AccessKey, testenv.EnvKubeconfig} {
		if !strings.Contains(string(envFile), k+"=") {
			t.Errorf("env file lacks %s:\n%s", k, envFile)
		}
	}
	if out, err := deps("status"); err != nil {
		t.Errorf("status after up: %v\n%s", err, out)
	}
	pidFiles, _ := filepath.Glob(filepath.Join(dir, "pids", "*.pid"))
	if len(pidFiles) != 4 {
		t.Fatalf("pid files = %v, want clickhouse, s3, etcd, kube-apiserver", pidFiles)
	}
	var pids []int
	for _, f := range pidFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, pid)
	}
	if out, err := deps("down"); err != nil {
		t.Fatalf("deps.sh down: %v\n%s", err, out)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range pids {
		for alive(pid) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if alive(pid) {
			t.Errorf("process %d still running after down", pid)
		}
	}
	// Nothing else started from the private dir may survive either.
	if out, _ := exec.Command("pgrep", "-f", dir).Output(); len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("processes using %s after down: %s", dir, out)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s still exists after down", dir)
	}
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	fields := strings.Fields(string(stat))
	return len(fields) > 2 && fields[2] != "Z"
}
