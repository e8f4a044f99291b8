package main

// The floor consumer: the JetStream floor's consumer side (floor.go's
// drainN: pull with the sinks' pull buffer, ack every batch, nothing else)
// as a process of its own, so that the sinks' scale runs can set a sink
// process's CPU beside a plain consumer's, each measured from /proc, with
// the embedded server's CPU in neither. It is this binary (or the test
// binary) run as `<bin> floor-consumer --config FILE`, through startProc
// like the capstream children: the file's nats and http sections as
// startProc and natsYAML write them, and a floor section naming the sink
// whose consumers it binds.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.yaml.in/yaml/v3"

	"github.com/capstream/capstream/schemas"
	"github.com/capstream/capstream/sink"
)

// floorChildArg is the first argument that makes the bench binary a
// floor consumer (main and TestMain look for it).
const floorChildArg = "floor-consumer"

// floorChildConfig is the part of a floor consumer's file it reads.
type floorChildConfig struct {
	NATS struct {
		URL string `yaml:"url"`
	} `yaml:"nats"`
	HTTP struct {
		Listen string `yaml:"listen"`
	} `yaml:"http"`
	Floor struct {
		// Durable is schemas.ConsumerPcapSink or ConsumerFlowSink: the
		// sink whose partition consumers are bound and drained.
		Durable string `yaml:"durable"`
	} `yaml:"floor"`
}

// floorChildYAML is a floor consumer's file but the sections startProc
// adds.
func floorChildYAML(natsURL, durable string) string {
	return natsYAML(natsURL, "capstream-bench-floor-"+durable) + fmt.Sprintf("floor:\n  durable: %s\n", durable)
}

// runFloorChild runs a floor consumer until SIGTERM and returns its exit
// code.
func runFloorChild(args []string) int {
	if err := floorChild(args); err != nil {
		fmt.Fprintln(os.Stderr, "floor consumer:", err)
		return 1
	}
	return 0
}

func floorChild(args []string) error {
	if len(args) != 2 || args[0] != "--config" {
		return errors.New("usage: floor-consumer --config FILE")
	}
	raw, err := os.ReadFile(args[1])
	if err != nil {
		return err
	}
	var c floorChildConfig
	if err := yaml.Unmarshal(raw, &c); err != nil {
		return fmt.Errorf("%s: %w", args[1], err)
	}
	template := schemas.PcapSinkConsumer()
	if c.Floor.Durable == schemas.ConsumerFlowSink {
		template = schemas.FlowSinkConsumer()
	} else if c.Floor.Durable != schemas.ConsumerPcapSink {
		return fmt.Errorf("floor.durable %q: want %s or %s", c.Floor.Durable, schemas.ConsumerPcapSink, schemas.ConsumerFlowSink)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	nc, err := nats.Connect(c.NATS.URL, nats.Name("capstream-bench-floor-"+c.Floor.Durable))
	if err != nil {
		return fmt.Errorf("connect to nats: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	cons, err := sink.Bind(ctx, js, template, 0)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", c.HTTP.Listen)
	if err != nil {
		return err
	}
	var pulling atomic.Bool
	mux := http.NewServeMux()
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !pulling.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	mux.HandleFunc("/metrics", func(http.ResponseWriter, *http.Request) {})
	srv := &http.Server{Handler: mux} //nolint:gosec // a local child of the harness
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	pulling.Store(true)
	// No count: it pulls and acks until SIGTERM; the harness watches the
	// consumers drain.
	if err := drainN(ctx, cons, math.MaxInt); err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

// startFloorChild starts a floor consumer of durable on the server at
// natsURL: this executable, in the floor-consumer mode.
func startFloorChild(ctx context.Context, o options, dir, natsURL, durable string) (*proc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return startProc(ctx, o.Log, dir, self, procSpec{Args: []string{floorChildArg}, Name: "floor " + durable,
		Config: floorChildYAML(natsURL, durable), File: "floor-" + durable + ".yaml"})
}
