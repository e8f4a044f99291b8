package sinktest

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/schemas"
	"github.com/capstream/capstream/sink"
)

// Partition computes the partition the server stores a batch in.
func TestPartitionMatchesServer(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: real NATS server")
	}
	srv := testenv.NATS(t)
	if err := schemas.EnsureStreams(t.Context(), srv.JS, schemas.DefaultPacketsStreamLimits()); err != nil {
		t.Fatal(err)
	}
	// Interest retention keeps nothing without a consumer.
	if _, err := sink.Bind(t.Context(), srv.JS, schemas.PcapSinkConsumer(), 0); err != nil {
		t.Fatal(err)
	}
	st, err := srv.JS.Stream(t.Context(), schemas.StreamPackets)
	if err != nil {
		t.Fatal(err)
	}
	for k := range 20 {
		ns, name, node := "team-a", fmt.Sprintf("cap-%d.web", k), fmt.Sprintf("node-%d", k%3)
		subj, err := schemas.PacketSubject(ns, name, node)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := srv.JS.Publish(t.Context(), subj, []byte("x")); err != nil {
			t.Fatal(err)
		}
		m, err := st.GetLastMsgForSubject(t.Context(), subj+".*")
		if err != nil {
			t.Fatal(err)
		}
		got, err := strconv.Atoi(m.Subject[strings.LastIndexByte(m.Subject, '.')+1:])
		if err != nil {
			t.Fatal(err)
		}
		if want := Partition(ns, name, node, schemas.DefaultPacketPartitions); got != want {
			t.Errorf("%s: stored in partition %d, Partition says %d", subj, got, want)
		}
	}
}
