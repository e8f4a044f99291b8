package kubeclient

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConfig(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
	if err := (Config{QPS: 0, Burst: 1}).Validate(); err == nil || !strings.Contains(err.Error(), "qps") {
		t.Errorf("zero qps: %v", err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	kc := "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n" +
		"users: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n"
	if err := os.WriteFile(path, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Config{Kubeconfig: path, QPS: 7, Burst: 9}.RESTConfig("capstream-test")
	if err != nil {
		t.Fatal(err)
	}
	if c.Host != "https://127.0.0.1:1" || c.QPS != 7 || c.Burst != 9 || c.UserAgent != "capstream-test" || c.BearerToken != "t" {
		t.Errorf("rest config %+v", c)
	}
	if _, err := (Config{Kubeconfig: filepath.Join(t.TempDir(), "missing"), QPS: 1, Burst: 1}).RESTConfig("x"); err == nil {
		t.Error("a missing kubeconfig loaded")
	}
}
