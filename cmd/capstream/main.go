// Command capstream is the production binary of capstream: the router, the
// node producer, the sinks and the user commands are its subcommands. The
// whole pipeline in one process (embedded NATS, simulated node) is a
// separate binary, cmd/capstream-dev, so none of it ships in the image the
// cluster runs. Each subcommand is wiring only: it loads its config,
// builds the logger and metrics, calls the component's New and runs it.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	svc "github.com/capstream/capstream/internal/run"
)

// Exit codes scripts can rely on.
const (
	exitOK    = 0
	exitError = 1 // the command ran and failed
	exitUsage = 2 // bad flags, arguments or input files
	// 3 was "not built yet" while subcommands were placeholders; it stays
	// unused so no script that checked it is misled.
)

// usageError marks errors caused by how the command was called.
type usageError = svc.UsageError

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one command line and returns the process exit code.
func run(args []string, stdout, stderr io.Writer) int {
	resetCLIEnv(stderr)
	root := newRootCmd()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.Execute()
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, new(usageError)):
		fmt.Fprintf(stderr, "capstream: %v\nRun 'capstream --help' for usage.\n", err)
		return exitUsage
	case errors.Is(err, errNotFound):
		fmt.Fprintf(stderr, "capstream: %v\n", err)
		return exitNotFound
	case errors.Is(err, errUnavailable):
		fmt.Fprintf(stderr, "capstream: %v\n", err)
		return exitUnavailable
	default:
		fmt.Fprintf(stderr, "capstream: %v\n", err)
		return exitError
	}
}

func newRootCmd() *cobra.Command {
	if cliEnv == nil {
		resetCLIEnv(os.Stderr)
	}
	root := &cobra.Command{
		Use:   "capstream",
		Short: "Kubernetes PacketCapture to live packet capture, pcaps on S3 and flows in ClickHouse",
		Long: `capstream turns projectcalico.org/v3 PacketCapture resources into live packet
capture on the selected workloads' nodes, streams the packets through NATS
JetStream, and writes rolling pcap objects to S3-compatible storage and flow
records to ClickHouse.

Services:   router, producer, sink pcap, sink flows, access, nats-auth
User tools: validate, migrate, get, captured-packets, flows, version`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{Err: err} })
	root.AddCommand(
		newVersionCmd(),
		newValidateCmd(),
		newMigrateCmd(),
		newRouterCmd(),
		newProducerCmd(),
		newSinkCmd(),
		newAccessCmd(),
		newNATSAuthCmd(),
		newGetCmd(),
		newCapturedPacketsCmd(),
		newFlowsCmd(),
	)
	return root
}

func newSinkCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "sink",
		Short: "Consume packet batches into S3 (pcap) or ClickHouse (flows)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return usageError{Err: errors.New("sink needs a subcommand: pcap or flows")}
		},
	}
	c.AddCommand(
		newSinkPcapCmd(),
		newSinkFlowsCmd(),
	)
	return c
}
