package producer

import (
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	valid := DefaultConfig()
	valid.Node = "node-1"
	if err := valid.Validate(); err != nil {
		t.Fatalf("defaults with a node: %v", err)
	}
	cases := map[string]struct {
		mod  func(c *Config)
		want string
	}{
		"no node":          {func(c *Config) { c.Node = "" }, "node"},
		"bad node":         {func(c *Config) { c.Node = "a*b" }, "node"},
		"source":           {func(c *Config) { c.Source = "pcap" }, "source"},
		"snap":             {func(c *Config) { c.DefaultSnapLength = 0 }, "defaultSnapLength"},
		"batch too big":    {func(c *Config) { c.BatchBytes = 1 << 20 }, "batchBytes"},
		"in flight":        {func(c *Config) { c.MaxInFlightBytes = 1000 }, "maxInFlightBytes"},
		"grace":            {func(c *Config) { c.GracePeriod = 0 }, "gracePeriod"},
		"ring":             {func(c *Config) { c.AFPacket.RingBytes = 1 }, "ring bytes"},
		"block":            {func(c *Config) { c.AFPacket.BlockBytes = 4096 }, "block bytes"},
		"delay":            {func(c *Config) { c.BatchDelay = time.Microsecond }, "batchDelay"},
		"file needs paths": {func(c *Config) { c.Source = SourceFile; c.File.Files = map[string]string{"x": ""} }, "empty path"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			cfg := valid
			c.mod(&cfg)
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Validate: %v, want an error about %q", err, c.want)
			}
		})
	}
}
