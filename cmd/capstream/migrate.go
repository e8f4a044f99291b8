package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	chschema "github.com/capstream/capstream/schemas/clickhouse"
	"github.com/spf13/cobra"
)

func newMigrateCmd() *cobra.Command {
	var addr, database, user, password string
	var timeout time.Duration
	c := &cobra.Command{
		Use:   "migrate",
		Short: "Create or update capstream's ClickHouse tables (flows, pcap_objects)",
		Long: `migrate applies capstream's numbered ClickHouse migrations that the database
has not recorded yet. It is safe to run any number of times. The sinks run
the same migrations when they start.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if password == "" {
				password = os.Getenv("CLICKHOUSE_PASSWORD")
			}
			ctx, cancel := context.WithTimeout(c.Context(), timeout)
			defer cancel()
			conn, err := clickhouse.Open(&clickhouse.Options{
				Addr:        []string{addr},
				Auth:        clickhouse.Auth{Database: database, Username: user, Password: password},
				DialTimeout: 10 * time.Second,
			})
			if err != nil {
				return fmt.Errorf("open clickhouse %s: %w", addr, err)
			}
			defer conn.Close()
			if err := conn.Ping(ctx); err != nil {
				return fmt.Errorf("connect to clickhouse %s: %w", addr, err)
			}
			applied, err := chschema.Migrate(ctx, conn)
			if err != nil {
				return err
			}
			if len(applied) == 0 {
				fmt.Fprintf(c.OutOrStdout(), "database %s is up to date\n", database)
			}
			for _, v := range applied {
				fmt.Fprintf(c.OutOrStdout(), "applied migration %03d\n", v)
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&addr, "clickhouse-addr", "127.0.0.1:9000", "ClickHouse native protocol address host:port")
	f.StringVar(&database, "database", "default", "database to migrate")
	f.StringVar(&user, "user", "default", "ClickHouse user")
	f.StringVar(&password, "password", "", "ClickHouse password (default: $CLICKHOUSE_PASSWORD)")
	f.DurationVar(&timeout, "timeout", time.Minute, "give up after this long")
	return c
}
