package main

import (
	"fmt"
	"io"
	"net"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/spf13/cobra"

	"github.com/capstream/capstream/internal/flowfilter"
)

// flowsQueryTimeout bounds the server's work for one flows query.
const flowsQueryTimeout = time.Minute

func newFlowsCmd() *cobra.Command {
	var ch chFlags
	var namespace, where string
	var limit int
	c := &cobra.Command{
		Use:   "flows NAME [-n NAMESPACE] [--where EXPR] [--limit N]",
		Short: "Show a capture's flows from ClickHouse",
		Long: `flows prints the flow records of one capture, oldest first: protocol, client
and server, Zeek-style state and history, packets and bytes each way, and
the DNS query, TLS SNI or HTTP Host when the traffic had one.

--where filters the flows with capstream's filter language (never SQL):
comparisons of a column with a value, combined with and, or, not and
parentheses, for example
  --where "resp_port = 443"
  --where "protocol = udp and dns_query contains 'example'"
  --where "orig_addr = 10.0.0.7 and not (conn_state = REJ or conn_state = S0)"
Operators: = != < <= > >= (numbers), = != contains (text), = != (addresses).
Columns: ` + strings.Join(flowfilter.Columns(), ", ") + `.
A filter that is not valid is refused with exit code 2 and says which part
is wrong.`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			name := args[0]
			if err := checkCaptureName(namespace, name); err != nil {
				return err
			}
			if limit <= 0 {
				return usageError{Err: fmt.Errorf("--limit %d: must be positive", limit)}
			}
			filter, err := flowfilter.Parse(where)
			if err != nil {
				return usageError{Err: fmt.Errorf("--where: %w", err)}
			}
			conn, err := ch.open()
			if err != nil {
				return err
			}
			defer conn.Close()
			if err := conn.Ping(c.Context()); err != nil {
				return fmt.Errorf("clickhouse %s: %w: %v", ch.cfg.Addr, errUnavailable, err)
			}
			q := `SELECT start_time, start_ns, node, pod, protocol, orig_addr, orig_port, resp_addr, resp_port,
				conn_state, history, orig_packets, resp_packets, orig_bytes, resp_bytes, dns_query, tls_sni, http_host
				FROM flows FINAL WHERE namespace = ? AND capture = ?`
			cond, condArgs := filter.SQL()
			q += " AND " + cond + fmt.Sprintf(" ORDER BY start_time, start_ns LIMIT %d", limit)
			// Read-only, bounded in time and rows, whatever the filter: a
			// second wall behind the filter language.
			qctx := clickhouse.Context(c.Context(), clickhouse.WithSettings(clickhouse.Settings{
				"readonly": 1, "max_execution_time": int(flowsQueryTimeout.Seconds()), "max_result_rows": limit,
			}))
			rows, err := conn.Query(qctx, q, append([]any{namespace, name}, condArgs...)...)
			if err != nil {
				return fmt.Errorf("query flows: %w", err)
			}
			defer rows.Close()
			var out []flowRow
			for rows.Next() {
				var r flowRow
				if err := rows.Scan(&r.start, &r.startNs, &r.node, &r.pod, &r.proto, &r.origAddr, &r.origPort, &r.respAddr, &r.respPort,
					&r.state, &r.history, &r.origPkts, &r.respPkts, &r.origBytes, &r.respBytes, &r.dns, &r.sni, &r.host); err != nil {
					return fmt.Errorf("read flows: %w", err)
				}
				out = append(out, r)
			}
			if err := rows.Err(); err != nil {
				return fmt.Errorf("read flows: %w", err)
			}
			if len(out) == 0 && where == "" {
				return fmt.Errorf("no flows recorded for capture %s/%s: %w", namespace, name, errNotFound)
			}
			return printFlows(c.OutOrStdout(), out)
		},
	}
	ch.add(c.Flags())
	c.Flags().StringVarP(&namespace, "namespace", "n", "default", "the capture's namespace")
	c.Flags().StringVar(&where, "where", "", "filter, e.g. \"resp_port = 443 and protocol = tcp\" (see above; never SQL)")
	c.Flags().IntVar(&limit, "limit", 50, "show at most this many flows")
	return c
}

type flowRow struct {
	start                                    time.Time
	startNs                                  uint32
	node, pod                                string
	proto                                    uint8
	origAddr, respAddr                       string
	origPort, respPort                       uint16
	state, history                           string
	origPkts, respPkts, origBytes, respBytes uint64
	dns, sni, host                           string
}

var protoNames = map[uint8]string{1: "icmp", 6: "tcp", 17: "udp", 58: "icmp6", 132: "sctp", 136: "udplite"}

func printFlows(w io.Writer, rows []flowRow) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	// POD: a connection between two captured pods is recorded once on
	// each pod's interface.
	fmt.Fprintln(tw, "START\tNODE\tPOD\tPROTO\tCLIENT\tSERVER\tSTATE\tHISTORY\tPACKETS\tBYTES\tL7")
	for _, r := range rows {
		proto := protoNames[r.proto]
		if proto == "" {
			proto = fmt.Sprint(r.proto)
		}
		l7 := ""
		switch {
		case r.dns != "":
			l7 = "dns " + r.dns
		case r.sni != "":
			l7 = "sni " + r.sni
		case r.host != "":
			l7 = "host " + r.host
		}
		ts := r.start.Add(time.Duration(r.startNs)).UTC().Format("15:04:05.000")
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d/%d\t%d/%d\t%s\n", ts, r.node, dash(r.pod), proto,
			hostPort(r.origAddr, r.origPort), hostPort(r.respAddr, r.respPort), dash(r.state), dash(r.history),
			r.origPkts, r.respPkts, r.origBytes, r.respBytes, truncate(l7, 48))
	}
	return tw.Flush()
}

// hostPort prints a FixedString(16) address, IPv4 mapped into IPv6 shown as
// IPv4.
func hostPort(addr string, port uint16) string {
	ip := net.IP([]byte(addr))
	if len(ip) != net.IPv6len {
		return "?"
	}
	return net.JoinHostPort(ip.String(), fmt.Sprint(port))
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
