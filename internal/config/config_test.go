package config

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/capstream/capstream/internal/testenv"
)

type natsSection struct {
	URL      string   `yaml:"url"`
	Password string   `yaml:"password" secret:"true"`
	Servers  []string `yaml:"servers"`
}

type testConfig struct {
	NATS        natsSection   `yaml:"nats"`
	GracePeriod time.Duration `yaml:"gracePeriod"`
	Replicas    int           `yaml:"replicas"`
	Debug       bool          `yaml:"debug"`
}

func (c *testConfig) Validate() error {
	var errs []error
	if c.Replicas < 1 {
		errs = append(errs, errors.New("replicas must be at least 1"))
	}
	if c.NATS.URL == "" {
		errs = append(errs, errors.New("nats.url is required"))
	}
	return errors.Join(errs...)
}

func defaults() *testConfig {
	return &testConfig{NATS: natsSection{URL: "nats://127.0.0.1:4222"}, GracePeriod: 10 * time.Second, Replicas: 1}
}

func TestLoadOrder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(path, []byte("nats:\n  url: nats://file:4222\n  password: p\ngracePeriod: 30s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got := defaults()
	env := []string{"CAPSTREAM_X_NATS_URL=nats://env:4222", "CAPSTREAM_X_REPLICAS=3", "CAPSTREAM_X_NATS_SERVERS=a, b", "OTHER=1"}
	if err := Load(path, "CAPSTREAM_X", env, got); err != nil {
		t.Fatal(err)
	}
	want := &testConfig{NATS: natsSection{URL: "nats://env:4222", Password: "p", Servers: []string{"a", "b"}}, GracePeriod: 30 * time.Second, Replicas: 3}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}
}

func TestLoadErrors(t *testing.T) {
	write := func(name, body string) string { return testenv.File(t, name, body) }
	cases := map[string]struct {
		path string
		env  []string
		want string
	}{
		"unknown key":         {write("a.yaml", "natz: {}\n"), nil, "field natz not found"},
		"malformed yaml":      {write("b.yaml", "nats: [\n"), nil, "config"},
		"bad duration":        {write("c.yaml", "gracePeriod: soon\n"), nil, "cannot unmarshal !!str `soon` into time.Duration"},
		"missing file":        {filepath.Join(t.TempDir(), "none.yaml"), nil, "read config"},
		"unknown env":         {"", []string{"CAPSTREAM_X_NATS_URI=x"}, "CAPSTREAM_X_NATS_URI: no such setting"},
		"bad env int":         {"", []string{"CAPSTREAM_X_REPLICAS=many"}, "CAPSTREAM_X_REPLICAS"},
		"every problem named": {write("d.yaml", "replicas: 0\nnats: {url: \"\"}\n"), nil, "replicas must be at least 1\nnats.url is required"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			err := Load(tc.path, "CAPSTREAM_X", tc.env, defaults())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Load error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestDumpRedacts(t *testing.T) {
	c := defaults()
	c.NATS.Password = "hunter2"
	var buf bytes.Buffer
	if err := Dump(&buf, c); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), "hunter2") || !strings.Contains(buf.String(), "password: REDACTED") {
		t.Errorf("dump did not redact:\n%s", buf.String())
	}
	if c.NATS.Password != "hunter2" {
		t.Error("Dump changed its argument")
	}
	// The dump loads back as a config file.
	p := filepath.Join(t.TempDir(), "dump.yaml")
	if err := os.WriteFile(p, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Load(p, "CAPSTREAM_X", nil, defaults()); err != nil {
		t.Errorf("dump does not load: %v", err)
	}
}

type InlineCommon struct {
	Level string      `yaml:"level"`
	NATS  natsSection `yaml:"nats"`
}

type inlineConfig struct {
	InlineCommon `yaml:",inline"`
	Name         string `yaml:"name"`
}

// TestInline: an inlined section's fields are the parent's, in the file,
// in the overrides and in the dump.
func TestInline(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(path, []byte("level: debug\nname: a\nnats:\n  url: nats://x:1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var cfg inlineConfig
	if err := Load(path, "T", []string{"T_NATS_PASSWORD=pw", "T_LEVEL=warn"}, &cfg); err != nil {
		t.Fatal(err)
	}
	want := inlineConfig{InlineCommon: InlineCommon{Level: "warn", NATS: natsSection{URL: "nats://x:1", Password: "pw"}}, Name: "a"}
	if diff := cmp.Diff(want, cfg, cmp.AllowUnexported(inlineConfig{})); diff != "" {
		t.Errorf("loaded (-want +got):\n%s", diff)
	}
	if err := Load("", "T", []string{"T_INLINECOMMON_LEVEL=x"}, &cfg); err == nil {
		t.Error("the inlined struct's own name is not a section, but was accepted")
	}
	var out bytes.Buffer
	if err := Dump(&out, &cfg); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); strings.Contains(got, "pw") || !strings.Contains(got, "level: warn") || strings.Contains(got, "inlinecommon") {
		t.Errorf("dump:\n%s", got)
	}
}
