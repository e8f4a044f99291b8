package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket/pcapgo"
	"github.com/minio/minio-go/v7"

	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/schemas"
)

// requireTool finds a client binary no one here wrote; deps.sh installs
// them. Missing ones fail under CAPSTREAM_TEST_REQUIRE_DEPS=1.
func requireTool(t *testing.T, name, path string) string {
	t.Helper()
	if path == "" {
		p, err := exec.LookPath(name)
		if err == nil {
			return p
		}
	} else if _, err := os.Stat(path); err == nil {
		return path
	}
	msg := fmt.Sprintf("%s not found (deploy/dev/deps.sh install puts it in place)", name)
	if testenv.RequireDeps() {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func runTool(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return string(out)
}

// readmeSQL is the README's example flow query, as users copy it.
func readmeSQL(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "```sql\n")
	sql, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("README.md has no ```sql block")
	}
	return sql
}

// TestRealClients runs the pipeline on a replayed pcap and then uses it
// exactly as the README tells users: the nats CLI for streams, consumers and
// pending counts, s3cmd to download a pcap the pipeline wrote (read back
// with tshark), and clickhouse-client for the example SQL.
func TestRealClients(t *testing.T) {
	natsCLI := requireTool(t, "nats", testenv.Getenv("CAPSTREAM_TEST_NATS_CLI"))
	s3cmd := requireTool(t, "s3cmd", "")
	chClient := requireTool(t, "clickhouse-client", "")
	tshark := requireTool(t, "tshark", "")

	r := startReplay(t, "clients-node", "10.71.0", false)
	ch, bucket, ns, keys := r.ch, r.bucket, r.ns, r.keys
	natsCmd := func(args ...string) []string { return append(natsArgs(r.monitor), args...) }
	host := "sample-web." + ns + ".svc.cluster.local"

	t.Run("nats anonymous", func(t *testing.T) {
		// Without credentials the server takes nothing, not even a
		// command a forger publishes (who trusts the server's CA).
		subj, _ := schemas.CommandSubject("clients-node", ns, "forged")
		out, err := exec.CommandContext(t.Context(), natsCLI, "--server", r.monitor.URL, "--tlsca", r.monitor.TLS.CAFile, "pub", subj, `{"action":"capture"}`).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "Authorization Violation") {
			t.Errorf("anonymous nats pub: %v\n%s\nwant it refused with an authorization violation", err, out)
		}
		// The monitor identity reads state, not messages.
		out, err = exec.CommandContext(t.Context(), natsCLI, natsCmd("stream", "view", schemas.StreamCommands)...).CombinedOutput()
		if err == nil || strings.Contains(string(out), `"action"`) {
			t.Errorf("nats stream view as the monitor: %v\n%s\nwant it refused", err, out)
		}
	})
	t.Run("nats", func(t *testing.T) {
		out := runTool(t, natsCLI, natsCmd("stream", "ls")...)
		for _, s := range []string{schemas.StreamCommands, schemas.StreamPackets, schemas.StreamStatus} {
			if !strings.Contains(out, s) {
				t.Errorf("nats stream ls lacks %s:\n%s", s, out)
			}
		}
		out = runTool(t, natsCLI, natsCmd("consumer", "report", schemas.StreamPackets)...)
		var partitions []string
		for _, durable := range []string{schemas.ConsumerPcapSink, schemas.ConsumerFlowSink} {
			for p := range schemas.DefaultPacketPartitions {
				partitions = append(partitions, schemas.SinkPartitionName(durable, p))
			}
		}
		for _, c := range partitions {
			if !strings.Contains(out, c) {
				t.Errorf("nats consumer report lacks %s:\n%s", c, out)
			}
		}
		// Every batch of the replay is delivered and acked once its object
		// and flows are written: both sinks drain to zero pending, each
		// over its partitions, and each delivered some.
		for _, durable := range []string{schemas.ConsumerPcapSink, schemas.ConsumerFlowSink} {
			testenv.Eventually(t, 60*time.Second, func() error {
				var delivered uint64
				for p := range schemas.DefaultPacketPartitions {
					c := schemas.SinkPartitionName(durable, p)
					var info struct {
						NumPending    uint64 `json:"num_pending"`
						NumAckPending int    `json:"num_ack_pending"`
						Delivered     struct {
							StreamSeq uint64 `json:"stream_seq"`
						} `json:"delivered"`
					}
					js := runTool(t, natsCLI, natsCmd("consumer", "info", schemas.StreamPackets, c, "--json")...)
					if err := json.Unmarshal([]byte(js), &info); err != nil {
						return fmt.Errorf("consumer info json: %w: %s", err, js)
					}
					if info.NumPending != 0 || info.NumAckPending != 0 {
						return fmt.Errorf("%s: pending %d, unacked %d", c, info.NumPending, info.NumAckPending)
					}
					delivered = max(delivered, info.Delivered.StreamSeq)
				}
				if delivered == 0 {
					return fmt.Errorf("%s: nothing delivered on any partition", durable)
				}
				return nil
			})
		}
	})

	t.Run("s3cmd", func(t *testing.T) {
		args := []string{"--access_key=" + bucket.AccessKey, "--secret_key=" + bucket.SecretKey,
			"--host=" + bucket.Endpoint, "--host-bucket=" + bucket.Endpoint, "--ssl", "--ca-certs=" + bucket.Config().TLS.CAFile, "--region=us-east-1"}
		out := runTool(t, s3cmd, append(args, "ls", "--recursive", "s3://"+bucket.Bucket+"/")...)
		if !strings.Contains(out, keys[0]) {
			t.Fatalf("s3cmd ls lacks %s:\n%s", keys[0], out)
		}
		dst := filepath.Join(t.TempDir(), "got.pcap")
		runTool(t, s3cmd, append(args, "get", "s3://"+bucket.Bucket+"/"+keys[0], dst)...)
		got, err := os.ReadFile(dst)
		if err != nil {
			t.Fatal(err)
		}
		obj, err := bucket.Client.GetObject(t.Context(), bucket.Bucket, keys[0], minio.GetObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		want, err := io.ReadAll(obj)
		obj.Close()
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("s3cmd download differs from the object (%d vs %d bytes, %v)", len(got), len(want), err)
		}
		count := 0 // lines of frame numbers; tshark may add a warning as root
		for _, line := range strings.Split(runTool(t, tshark, "-r", dst, "-T", "fields", "-e", "frame.number"), "\n") {
			if _, err := strconv.Atoi(strings.TrimSpace(line)); err == nil {
				count++
			}
		}
		if want := countPcap(t, want); count == 0 || count != want {
			t.Errorf("tshark reads %d packets from the downloaded pcap, the object holds %d", count, want)
		}
	})

	t.Run("clickhouse-client", func(t *testing.T) {
		sql := strings.ReplaceAll(readmeSQL(t), "sample-namespace", ns)
		// As the README says: the client config deps.sh writes holds the
		// address, the dev CA and the password.
		args := []string{"--config-file", testenv.Getenv(testenv.EnvClickHouseClientConfig)}
		if args[1] == "" {
			t.Fatalf("no %s in %s: restart the services with deploy/dev/deps.sh up", testenv.EnvClickHouseClientConfig, testenv.EnvFilePath())
		}
		args = append(args, "--database", ch.Database, "--format", "TSV", "--query", sql)
		// Waiting for: README query returns the replay's flows.
		testenv.Eventually(t, 60*time.Second, func() error {
			out, err := exec.CommandContext(t.Context(), chClient, args...).CombinedOutput()
			if err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			if !strings.Contains(string(out), host) && !strings.Contains(string(out), "sample-web") {
				return fmt.Errorf("no flow with the HTTP host or DNS name:\n%s", out)
			}
			return nil
		})
	})
}

func countPcap(t *testing.T, b []byte) int {
	t.Helper()
	r, err := pcapgo.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		if _, _, err := r.ReadPacketData(); err != nil {
			return n
		}
		n++
	}
}
