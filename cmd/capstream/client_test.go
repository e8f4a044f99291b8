package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestCLISettings: the user commands read CAPSTREAM_<SECTION>_<FIELD>, the
// previous release's names still work with a warning, the new name wins
// when both are set, and a typo under a section is an error.
func TestCLISettings(t *testing.T) {
	var warn bytes.Buffer
	s, err := loadCLISettings([]string{
		"CAPSTREAM_S3_ENDPOINT=127.0.0.1:9",
		"CAPSTREAM_S3_ACCESS_KEY=old-ak",
		"CAPSTREAM_S3_SECRET_KEY=old-sk",
		"CAPSTREAM_S3_SECRETKEY=new-sk",
		"CAPSTREAM_S3_PREFIX=pfx",
		"CAPSTREAM_CLICKHOUSE_USER=reader",
		"CLICKHOUSE_PASSWORD=chpw",
		"CAPSTREAM_CLICKHOUSE_ADDR=127.0.0.1:19000",
		// Not the user commands' settings: left alone.
		"CAPSTREAM_DEV_DIR=/tmp/x",
		"CAPSTREAM_SINK_PCAP_S3_BUCKET=other",
	}, &warn)
	if err != nil {
		t.Fatal(err)
	}
	got := []string{s.S3.Endpoint, s.S3.AccessKey, s.S3.SecretKey, s.S3.Bucket, s.Pcap.Prefix, s.ClickHouse.Username, s.ClickHouse.Password, s.ClickHouse.Addr, s.ClickHouse.Database}
	want := []string{"127.0.0.1:9", "old-ak", "new-sk", "capstream", "pfx", "reader", "chpw", "127.0.0.1:19000", "default"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("settings (-want +got):\n%s", diff)
	}
	for _, w := range []string{
		"CAPSTREAM_S3_ACCESS_KEY is deprecated: use CAPSTREAM_S3_ACCESSKEY",
		"CAPSTREAM_S3_SECRET_KEY is deprecated and ignored: CAPSTREAM_S3_SECRETKEY is set",
		"CAPSTREAM_S3_PREFIX is deprecated: use CAPSTREAM_PCAP_PREFIX",
		"CAPSTREAM_CLICKHOUSE_USER is deprecated: use CAPSTREAM_CLICKHOUSE_USERNAME",
		"CLICKHOUSE_PASSWORD is deprecated: use CAPSTREAM_CLICKHOUSE_PASSWORD",
	} {
		if !strings.Contains(warn.String(), w) {
			t.Errorf("no warning %q in:\n%s", w, warn.String())
		}
	}
	if _, err := loadCLISettings([]string{"CAPSTREAM_S3_SECRET=x"}, &warn); err == nil || !strings.Contains(err.Error(), "CAPSTREAM_S3_SECRET: no such setting") {
		t.Errorf("typo under s3: %v", err)
	}
}
