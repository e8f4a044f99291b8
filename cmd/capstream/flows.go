package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/capstream/capstream/access"
	"github.com/capstream/capstream/internal/flowfilter"
)

// flowsQueryTimeout bounds the server's work for one flows query.
const flowsQueryTimeout = time.Minute

func newFlowsCmd() *cobra.Command {
	var ch chFlags
	var kube kubeFlags
	var api apiFlags
	var where, sinceS string
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
is wrong.

flows asks the access API (--server or $CAPSTREAM_ACCESS_URL, its CA from
--certificate-authority or $CAPSTREAM_ACCESS_CA) as the kubeconfig's
user, who needs get on packetcaptures/files in the namespace. --direct
queries ClickHouse with its credentials instead (admin mode), with the
same filter language and the same query.`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			name := args[0]
			if err := checkCaptureName(kube.namespace, name); err != nil {
				return err
			}
			if limit <= 0 {
				return usageError{Err: fmt.Errorf("--limit %d: must be positive", limit)}
			}
			since, err := parseTimeFlag("since", sinceS)
			if err != nil {
				return err
			}
			// Parsed here in both modes: a bad filter is a usage error
			// before anything is asked of a server.
			filter, err := flowfilter.Parse(where)
			if err != nil {
				return usageError{Err: fmt.Errorf("--where: %w", err)}
			}
			var out []access.Flow
			if api.direct {
				out, err = directFlows(c.Context(), &ch, access.FlowQuery{Namespace: kube.namespace, Name: name, Filter: filter, Limit: limit, Since: since, Timeout: flowsQueryTimeout})
			} else {
				out, err = apiFlowsQuery(c.Context(), &api, &kube, name, where, limit, since)
			}
			if err != nil {
				return err
			}
			if len(out) == 0 && where == "" {
				return fmt.Errorf("no flows recorded for capture %s/%s: %w", kube.namespace, name, errNotFound)
			}
			return printFlows(c.OutOrStdout(), out)
		},
	}
	ch.add(c.Flags())
	kube.add(c.Flags())
	api.add(c.Flags())
	c.Flags().StringVar(&where, "where", "", "filter, e.g. \"resp_port = 443 and protocol = tcp\" (see above; never SQL)")
	c.Flags().IntVar(&limit, "limit", 50, "show at most this many flows (the access API caps it at its maxFlowRows)")
	c.Flags().StringVar(&sinceS, "since", "", "only flows that end at or after this time (RFC 3339 or duration ago)")
	return c
}

// directFlows runs the query on ClickHouse with its credentials (--direct).
func directFlows(ctx context.Context, ch *chFlags, q access.FlowQuery) ([]access.Flow, error) {
	conn, err := ch.open()
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if err := conn.Ping(ctx); err != nil {
		return nil, fmt.Errorf("clickhouse %s: %w: %v", ch.cfg.Addr, errUnavailable, err)
	}
	return access.QueryFlows(ctx, conn, q, nil)
}

// apiFlowsQuery asks the access API, which runs the same query.
func apiFlowsQuery(ctx context.Context, api *apiFlags, kube *kubeFlags, name, where string, limit int, since time.Time) ([]access.Flow, error) {
	cl, err := api.client(kube)
	if err != nil {
		return nil, err
	}
	q := url.Values{"limit": {strconv.Itoa(limit)}}
	if where != "" {
		q.Set("where", where)
	}
	timeQuery(q, "since", since)
	var list access.FlowList
	if err := cl.getJSON(ctx, http.MethodGet, kube.namespace, name, "flows", q, &list); err != nil {
		return nil, err
	}
	return list.Flows, nil
}

var protoNames = map[uint8]string{1: "icmp", 6: "tcp", 17: "udp", 58: "icmp6", 132: "sctp", 136: "udplite"}

func printFlows(w io.Writer, rows []access.Flow) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	// POD: a connection between two captured pods is recorded once on
	// each pod's interface.
	fmt.Fprintln(tw, "START\tNODE\tPOD\tPROTO\tCLIENT\tSERVER\tSTATE\tHISTORY\tPACKETS\tBYTES\tL7")
	for _, r := range rows {
		proto := protoNames[r.Protocol]
		if proto == "" {
			proto = fmt.Sprint(r.Protocol)
		}
		l7 := ""
		switch {
		case r.DNSQuery != "":
			l7 = "dns " + r.DNSQuery
		case r.TLSSNI != "":
			l7 = "sni " + r.TLSSNI
		case r.HTTPHost != "":
			l7 = "host " + r.HTTPHost
		}
		ts := r.Start.UTC().Format("15:04:05.000")
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d/%d\t%d/%d\t%s\n", ts, r.Node, dash(r.Pod), proto,
			net.JoinHostPort(r.OrigAddr, fmt.Sprint(r.OrigPort)), net.JoinHostPort(r.RespAddr, fmt.Sprint(r.RespPort)), dash(r.ConnState), dash(r.History),
			r.OrigPackets, r.RespPackets, r.OrigBytes, r.RespBytes, truncate(l7, 48))
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
