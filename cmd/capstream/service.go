package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/capstream/capstream/internal/config"
	"github.com/spf13/cobra"
)

// serviceSpec describes one long-running subcommand: its help, how its
// configuration is built and loaded, and how it runs.
type serviceSpec[T config.Validator] struct {
	use, short, long string
	// envPrefix names the environment overrides, e.g. CAPSTREAM_ROUTER.
	envPrefix string
	// environ returns the environment to read overrides from; nil means
	// os.Environ.
	environ func() []string
	// defaults returns a fresh configuration holding the defaults.
	defaults func() T
	// run runs the service until ctx ends (SIGINT or SIGTERM).
	run func(ctx context.Context, cfg T) error
}

// serviceCmd builds a service subcommand with the only flags a service
// has: --config, --check and --dump. Every service loads, checks and dumps
// its configuration the same way and stops on the same signals.
func serviceCmd[T config.Validator](s serviceSpec[T]) *cobra.Command {
	var path string
	var check, dump bool
	c := &cobra.Command{
		Use:   s.use,
		Short: s.short,
		Long:  s.long,
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			environ := os.Environ
			if s.environ != nil {
				environ = s.environ
			}
			cfg := s.defaults()
			if err := config.Load(path, s.envPrefix, environ(), cfg); err != nil {
				return usageError{err}
			}
			if dump {
				return config.Dump(c.OutOrStdout(), cfg)
			}
			if check {
				fmt.Fprintln(c.OutOrStdout(), "config ok")
				return nil
			}
			ctx := c.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
			defer stop()
			return s.run(ctx, cfg)
		},
	}
	f := c.Flags()
	f.StringVar(&path, "config", "", "YAML configuration file")
	f.BoolVar(&check, "check", false, "validate the configuration and exit")
	f.BoolVar(&dump, "dump", false, "print the effective configuration (secrets redacted) and exit")
	return c
}
