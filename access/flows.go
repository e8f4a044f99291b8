package access

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/capstream/capstream/internal/flowfilter"
)

// Flow is one flow record as the API returns it.
type Flow struct {
	Start       time.Time `json:"start"`
	Node        string    `json:"node"`
	Pod         string    `json:"pod"`
	Interface   string    `json:"interface"`
	Protocol    uint8     `json:"protocol"`
	OrigAddr    string    `json:"orig_addr"`
	OrigPort    uint16    `json:"orig_port"`
	RespAddr    string    `json:"resp_addr"`
	RespPort    uint16    `json:"resp_port"`
	ConnState   string    `json:"conn_state"`
	History     string    `json:"history"`
	OrigPackets uint64    `json:"orig_packets"`
	RespPackets uint64    `json:"resp_packets"`
	OrigBytes   uint64    `json:"orig_bytes"`
	RespBytes   uint64    `json:"resp_bytes"`
	DNSQuery    string    `json:"dns_query"`
	TLSSNI      string    `json:"tls_sni"`
	HTTPHost    string    `json:"http_host"`
}

// FlowList is the answer of GET flows.
type FlowList struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Limit is the limit applied: the one asked for, capped by the
	// server's maxFlowRows.
	Limit int    `json:"limit"`
	Flows []Flow `json:"flows"`
}

// FlowQuery is one capture's flows query. The CLI's direct mode runs the
// same one.
type FlowQuery struct {
	Namespace, Name string
	// Filter is a parsed flowfilter; nil matches every flow.
	Filter *flowfilter.Filter
	// Limit bounds the rows (positive).
	Limit int
	// Since keeps flows that end at or after it, when set.
	Since time.Time
	// Timeout is ClickHouse's max_execution_time.
	Timeout time.Duration
}

// SQL returns the query and its bound values: the SQL text holds only
// whitelisted words (flowfilter), every value is a parameter, and the
// capture's scope is ANDed around the filter's parenthesised condition.
func (f FlowQuery) SQL() (string, []any) {
	q := `SELECT start_time, start_ns, node, pod, interface, protocol, orig_addr, orig_port, resp_addr, resp_port,
	conn_state, history, orig_packets, resp_packets, orig_bytes, resp_bytes, dns_query, tls_sni, http_host
	FROM flows FINAL WHERE namespace = ? AND capture = ?`
	args := []any{f.Namespace, f.Name}
	if !f.Since.IsZero() {
		q += " AND end_time >= toDateTime(?)"
		args = append(args, f.Since.Unix())
	}
	cond, condArgs := f.Filter.SQL()
	q += " AND " + cond + " ORDER BY start_time, start_ns LIMIT " + strconv.Itoa(f.Limit)
	return q, append(args, condArgs...)
}

// QueryFlows runs the query read-only, bounded in time and rows whatever
// the filter: a second wall behind the filter language. (With a
// readonly=1 user, as deploy/dev makes capstream-reader, ClickHouse 18.16
// keeps the profile's own limits and ignores these.) hook, when set, sees
// the SQL and values sent.
func QueryFlows(ctx context.Context, conn driver.Conn, f FlowQuery, hook func(string, []any)) ([]Flow, error) {
	if f.Limit <= 0 {
		return nil, fmt.Errorf("flows query: limit %d must be positive", f.Limit)
	}
	timeout := max(1, int(f.Timeout.Seconds()))
	q, args := f.SQL()
	if hook != nil {
		hook(q, args)
	}
	qctx := clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{
		"readonly": 1, "max_execution_time": timeout, "max_result_rows": f.Limit,
	}))
	rows, err := conn.Query(qctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("query flows: %w", err)
	}
	defer rows.Close()
	out := []Flow{}
	for rows.Next() {
		var r Flow
		var startNs uint32
		var orig, resp string
		if err := rows.Scan(&r.Start, &startNs, &r.Node, &r.Pod, &r.Interface, &r.Protocol, &orig, &r.OrigPort, &resp, &r.RespPort,
			&r.ConnState, &r.History, &r.OrigPackets, &r.RespPackets, &r.OrigBytes, &r.RespBytes, &r.DNSQuery, &r.TLSSNI, &r.HTTPHost); err != nil {
			return nil, fmt.Errorf("read flows: %w", err)
		}
		r.Start = r.Start.Add(time.Duration(startNs)).UTC()
		r.OrigAddr, r.RespAddr = addrString(orig), addrString(resp)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read flows: %w", err)
	}
	return out, nil
}

// addrString prints a FixedString(16) address, IPv4 mapped into IPv6
// shown as IPv4.
func addrString(b string) string {
	ip := net.IP([]byte(b))
	if len(ip) != net.IPv6len {
		return "?"
	}
	return ip.String()
}

// defaultFlowRows is the limit of a flows query that does not set one.
const defaultFlowRows = 50

// flows serves GET flows?where=&limit=&since=.
func (s *Server) flows(q *request) error {
	params := q.r.URL.Query()
	for name, v := range params {
		switch name {
		case "where", "limit", "since":
			if len(v) != 1 {
				return fail(http.StatusBadRequest, "%s given %d times", name, len(v))
			}
		default:
			return fail(http.StatusBadRequest, "unknown parameter %q: flows takes where, limit and since", clip(name))
		}
	}
	filter, err := flowfilter.Parse(params.Get("where"))
	if err != nil {
		return fail(http.StatusBadRequest, "where: %v", err)
	}
	limit := defaultFlowRows
	if v := params.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return fail(http.StatusBadRequest, "invalid limit %q: want a positive whole number", clip(v))
		}
		limit = n
	}
	limit = min(limit, s.cfg.MaxFlowRows)
	since, err := timeParam(q, "since")
	if err != nil {
		return err
	}
	rows, err := QueryFlows(q.r.Context(), s.deps.ClickHouse, FlowQuery{Namespace: q.namespace, Name: q.name, Filter: filter, Limit: limit, Since: since, Timeout: s.cfg.FlowQueryTimeout}, s.deps.OnQuery)
	if err != nil {
		s.log.Warn("flows query failed", "namespace", q.namespace, "capture", q.name, "error", err)
		return fail(http.StatusBadGateway, "the flows query failed in ClickHouse")
	}
	writeJSON(q.w, http.StatusOK, FlowList{Namespace: q.namespace, Name: q.name, Limit: limit, Flows: rows})
	return nil
}
