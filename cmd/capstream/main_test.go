package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/capstream/capstream/internal/testenv"
)

func runCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestVersionAndHelp(t *testing.T) {
	code, out, _ := runCmd(t, "version")
	if code != exitOK || !strings.HasPrefix(out, "capstream ") {
		t.Errorf("version = %d %q", code, out)
	}
	code, out, _ = runCmd(t, "--help")
	if code != exitOK {
		t.Errorf("--help exit %d", code)
	}
	for _, sub := range []string{"router", "producer", "sink", "get", "captured-packets", "flows", "validate", "migrate", "version"} {
		if !strings.Contains(out, "  "+sub+" ") {
			t.Errorf("--help does not list %s:\n%s", sub, out)
		}
	}
	// The whole pipeline in one process is cmd/capstream-dev's, not the
	// production binary's.
	if strings.Contains(out, "  dev ") {
		t.Errorf("--help lists dev:\n%s", out)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"--bogus"}, {"no-such-command"}, {"validate"}, {"sink"}, {"version", "extra"}} {
		code, _, errOut := runCmd(t, args...)
		if code != exitUsage && code != exitError {
			t.Errorf("%v: exit %d, want usage error; stderr %q", args, code, errOut)
		}
		if errOut == "" {
			t.Errorf("%v: no message on stderr", args)
		}
	}
}

func TestValidate(t *testing.T) {
	write := func(name, body string) string { return testenv.File(t, name, body) }
	sample := "../../schemas/v3/testdata/sample.yaml"
	cases := map[string]struct {
		file     string
		wantCode int
		wantOut  []string
	}{
		"seed sample": {sample, exitOK, []string{"sample-namespace/sample-capture: valid"}},
		"two documents, one bad": {write("two.yaml", `apiVersion: projectcalico.org/v3
kind: PacketCapture
metadata: {name: good, namespace: ns}
spec: {selector: all()}
---
apiVersion: projectcalico.org/v3
kind: PacketCapture
metadata: {name: bad, namespace: ns}
spec:
  selector: a = "b"
  filters: [{protocol: TCP, ports: ["90:80"]}]
`), exitError, []string{"ns/good: valid", "ns/bad: invalid", "spec.selector", "spec.filters[0].ports[0]"}},
		"malformed yaml": {write("bad.yaml", "apiVersion: [\n"), exitError, []string{"document 1: invalid"}},
		"garbage bytes":  {write("garbage.yaml", "\x00\x01\xff\xfe{{{"), exitError, []string{"invalid"}},
		"wrong kind":     {write("pod.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n"), exitError, []string{"want projectcalico.org/v3 PacketCapture"}},
		"unknown field":  {write("typo.yaml", "apiVersion: projectcalico.org/v3\nkind: PacketCapture\nmetadata: {name: p}\nspec: {selectr: all()}\n"), exitError, []string{"selectr"}},
		"missing file":   {filepath.Join(t.TempDir(), "none.yaml"), exitUsage, nil},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			code, out, errOut := runCmd(t, "validate", "-f", tc.file)
			if code != tc.wantCode {
				t.Errorf("exit %d, want %d; stdout %q stderr %q", code, tc.wantCode, out, errOut)
			}
			for _, w := range tc.wantOut {
				if !strings.Contains(out, w) {
					t.Errorf("output %q lacks %q", out, w)
				}
			}
		})
	}
}
