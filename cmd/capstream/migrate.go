package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	chschema "github.com/capstream/capstream/schemas/clickhouse"
)

func newMigrateCmd() *cobra.Command {
	var ch chFlags
	var password string
	var timeout time.Duration
	c := &cobra.Command{
		Use:   "migrate",
		Short: "Create or update capstream's ClickHouse tables (flows, pcap_objects)",
		Long: `migrate applies capstream's numbered ClickHouse migrations that the database
has not recorded yet. It is safe to run any number of times. The sinks run
the same migrations when they start.

The connection comes from CAPSTREAM_CLICKHOUSE_ADDR, _DATABASE, _USERNAME and
_PASSWORD, then the flags.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if password != "" {
				ch.cfg.Password = password
			}
			ctx, cancel := context.WithTimeout(c.Context(), timeout)
			defer cancel()
			conn, err := ch.open()
			if err != nil {
				return err
			}
			defer conn.Close()
			if err := conn.Ping(ctx); err != nil {
				return fmt.Errorf("connect to clickhouse %s: %w: %v", ch.cfg.Addr, errUnavailable, err)
			}
			applied, err := chschema.Migrate(ctx, conn)
			if err != nil {
				return err
			}
			if len(applied) == 0 {
				fmt.Fprintf(c.OutOrStdout(), "database %s is up to date\n", ch.cfg.Database)
			}
			for _, v := range applied {
				fmt.Fprintf(c.OutOrStdout(), "applied migration %03d\n", v)
			}
			return nil
		},
	}
	f := c.Flags()
	ch.add(f)
	// The flags migrate had before the user commands shared one scheme.
	f.StringVar(&ch.cfg.Database, "database", ch.cfg.Database, "database to migrate")
	f.StringVar(&ch.cfg.Username, "user", ch.cfg.Username, "ClickHouse user")
	f.StringVar(&password, "password", "", "ClickHouse password")
	_ = f.MarkDeprecated("database", "use --clickhouse-database")
	_ = f.MarkDeprecated("user", "use --clickhouse-user")
	_ = f.MarkDeprecated("password", "set CAPSTREAM_CLICKHOUSE_PASSWORD: a flag shows in the process list")
	f.DurationVar(&timeout, "timeout", time.Minute, "give up after this long")
	return c
}
