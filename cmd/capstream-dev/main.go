// Command capstream-dev runs the whole capstream pipeline in one process:
// an embedded JetStream server, the router, one producer per configured
// node (live inside a simulated node, or replaying pcaps) and both sinks,
// against the ClickHouse, S3 and kube-apiserver that deploy/dev/deps.sh
// starts. `make demo` runs it; the production binary, cmd/capstream,
// carries none of this.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	svc "github.com/capstream/capstream/internal/run"
)

// usageError marks errors caused by how the command was called.
type usageError = svc.UsageError

func main() {
	root := newDevCmd()
	root.SilenceUsage, root.SilenceErrors = true, true
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{Err: err} })
	if err := root.Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "capstream-dev: %v\n", err)
		if errors.As(err, new(usageError)) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}
