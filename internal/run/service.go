package run

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/capstream/capstream/internal/config"
)

// UsageError marks errors caused by how a command was called (bad flags,
// an invalid configuration): main exits with 2 for them.
type UsageError struct{ Err error }

func (e UsageError) Error() string { return e.Err.Error() }
func (e UsageError) Unwrap() error { return e.Err }

// Spec describes one long-running subcommand: its help, how its
// configuration is built and loaded, and how it runs.
type Spec[T config.Validator] struct {
	Use, Short, Long string
	// EnvPrefix names the environment overrides, e.g. CAPSTREAM_ROUTER.
	EnvPrefix string
	// Environ returns the environment to read overrides from; nil means
	// os.Environ.
	Environ func() []string
	// Defaults returns a fresh configuration holding the defaults.
	Defaults func() T
	// Run runs the service until ctx ends (SIGINT or SIGTERM).
	Run func(ctx context.Context, cfg T) error
}

// Command builds a service subcommand with the only flags a service has:
// --config, --check and --dump. Every service loads, checks and dumps its
// configuration the same way and stops on the same signals.
func Command[T config.Validator](s Spec[T]) *cobra.Command {
	var path string
	var check, dump bool
	c := &cobra.Command{
		Use:   s.Use,
		Short: s.Short,
		Long:  s.Long,
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			environ := os.Environ
			if s.Environ != nil {
				environ = s.Environ
			}
			cfg := s.Defaults()
			if err := config.Load(path, s.EnvPrefix, environ(), cfg); err != nil {
				return UsageError{err}
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
			return s.Run(ctx, cfg)
		},
	}
	f := c.Flags()
	f.StringVar(&path, "config", "", "YAML configuration file")
	f.BoolVar(&check, "check", false, "validate the configuration and exit")
	f.BoolVar(&dump, "dump", false, "print the effective configuration (secrets redacted) and exit")
	return c
}

// Component is what every service runs: Run until ctx ends, Ready for
// /readyz.
type Component interface {
	Run(ctx context.Context) error
	Ready() error
}

// Serve runs the components and the health and metrics server in one
// group until ctx ends or one of them fails; /readyz checks each
// component by its name.
func Serve(ctx context.Context, cfg HTTPConfig, reg *prometheus.Registry, logger *slog.Logger, components map[string]Component) error {
	checks := make(map[string]Check, len(components))
	for name, c := range components {
		checks[name] = c.Ready
	}
	srv := NewServer(cfg, reg, checks, logger)
	g, gctx := errgroup.WithContext(ctx)
	for _, c := range components {
		g.Go(func() error { return c.Run(gctx) })
	}
	g.Go(func() error { return srv.Run(gctx) })
	return g.Wait()
}
