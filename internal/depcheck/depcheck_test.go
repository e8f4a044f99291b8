package depcheck

import (
	"bufio"
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/capstream/capstream"

// rule forbids packages under from from depending on packages matching to.
type rule struct {
	from, to string
	why      string
}

var rules = []rule{
	{"router", "producer", "components talk only through schemas"},
	{"router", "sink", "components talk only through schemas"},
	{"producer", "router", "components talk only through schemas"},
	{"producer", "sink", "components talk only through schemas"},
	{"sink", "router", "components talk only through schemas"},
	{"sink", "producer", "components talk only through schemas"},
	{"schemas", "router", "schemas imports no project package"},
	{"schemas", "producer", "schemas imports no project package"},
	{"schemas", "sink", "schemas imports no project package"},
	{"schemas", "internal", "schemas imports no project package"},
	{"internal", "router", "internal never imports a component"},
	{"internal", "producer", "internal never imports a component"},
	{"internal", "sink", "internal never imports a component"},
	{"router", "pipeline", "components never import the assembly"},
	{"producer", "pipeline", "components never import the assembly"},
	{"sink", "pipeline", "components never import the assembly"},
	{"schemas", "pipeline", "schemas imports no project package"},
	{"internal", "pipeline", "internal never imports the assembly"},
	{"access", "router", "the access API reads only the stores and the API server"},
	{"access", "producer", "the access API reads only the stores and the API server"},
	{"access", "sink", "the access API reads only the stores and the API server"},
	{"access", "pipeline", "the access API never imports the assembly"},
	{"router", "access", "components never import the access API"},
	{"producer", "access", "components never import the access API"},
	{"sink", "access", "components never import the access API"},
	{"natsauth", "router", "the auth callout needs only schemas and the API server"},
	{"natsauth", "producer", "the auth callout needs only schemas and the API server"},
	{"natsauth", "sink", "the auth callout needs only schemas and the API server"},
	{"natsauth", "access", "the auth callout needs only schemas and the API server"},
	{"producer", "natsauth", "components never import the auth callout"},
	{"", "cmd", "nothing imports cmd"},
	{"", "bench", "nothing imports bench"},
}

// external forbids third-party prefixes: producers and sinks build without
// apimachinery, and only schemas/v3 among the schemas pulls in k8s.io.
var external = []rule{
	{"producer", "k8s.io/", "producers build without Kubernetes libraries"},
	{"sink", "k8s.io/", "sinks build without Kubernetes libraries"},
}

func TestPackageBoundaries(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps=false", "-f", "{{.ImportPath}} {{join .Deps \" \"}}", module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	pkgs := 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		pkg, deps := fields[0], fields[1:]
		pkgs++
		for _, dep := range deps {
			for _, r := range rules {
				if within(pkg, r.from) && within(dep, r.to) && !within(pkg, r.to) {
					t.Errorf("%s imports %s: %s", pkg, dep, r.why)
				}
			}
			for _, r := range external {
				// A <pkg>test package (sinktest) is test support on top
				// of internal/testenv, never linked into a binary.
				if within(pkg, r.from) && strings.HasPrefix(dep, r.to) && !strings.HasSuffix(pkg, "test") {
					t.Errorf("%s depends on %s: %s", pkg, dep, r.why)
				}
			}
			if within(pkg, "schemas") && !within(pkg, "schemas/v3") && !within(pkg, "schemas/clickhouse") && strings.HasPrefix(dep, "k8s.io/") {
				t.Errorf("%s depends on %s: only schemas/v3 may use k8s.io", pkg, dep)
			}
		}
	}
	if pkgs < 5 {
		t.Fatalf("go list saw %d packages; the check would prove nothing", pkgs)
	}
}

// within reports whether pkg is the project directory dir or below it;
// dir "" means every project package.
func within(pkg, dir string) bool {
	if dir == "" {
		return strings.HasPrefix(pkg, module+"/")
	}
	p := module + "/" + dir
	return pkg == p || strings.HasPrefix(pkg, p+"/")
}

// productionForbidden are what the production binary must never link: the
// embedded NATS server, the simulated node and the in-process pipeline
// belong to cmd/capstream-dev, the bench and the tests.
var productionForbidden = []string{
	"github.com/nats-io/nats-server/v2/server",
	module + "/internal/netsim",
	module + "/internal/testenv",
	module + "/pipeline",
}

// TestProductionBinaryLean fails if cmd/capstream, the image every
// Deployment and DaemonSet runs, depends on anything in
// productionForbidden, directly or not.
func TestProductionBinaryLean(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", module+"/cmd/capstream").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 50 {
		t.Fatalf("go list -deps saw %d packages; the check would prove nothing", len(deps))
	}
	for _, dep := range deps {
		for _, bad := range productionForbidden {
			if dep == bad || strings.HasPrefix(dep, bad+"/") {
				t.Errorf("cmd/capstream depends on %s: it belongs to cmd/capstream-dev and the tests", dep)
			}
		}
	}
	// The dev binary is where they went: if it stopped linking them, the
	// list above would be checking names that no longer exist.
	out, err = exec.Command("go", "list", "-deps", module+"/cmd/capstream-dev").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, want := range []string{"github.com/nats-io/nats-server/v2/server", module + "/internal/netsim", module + "/pipeline"} {
		if !strings.Contains(" "+strings.ReplaceAll(string(out), "\n", " ")+" ", " "+want+" ") {
			t.Errorf("cmd/capstream-dev does not depend on %s; update productionForbidden", want)
		}
	}
}
