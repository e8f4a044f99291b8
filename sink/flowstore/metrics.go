package flowstore

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/capstream/capstream/internal/run"
)

type metrics struct {
	packets     *prometheus.CounterVec
	records     prometheus.Counter
	insertErrs  *prometheus.CounterVec
	openFlows   prometheus.Gauge
	flushTime   prometheus.Histogram
	recordsSize prometheus.Histogram
	statusErrs  prometheus.Counter
}

// register registers the flow sink's metrics; the runner's registrar adds
// the capstream_sink_flows_ prefix.
func (m *metrics) register(ms *run.Registrar) {
	m.packets = ms.CounterVec("packets_total", "Packets seen, by result (flow, malformed, not_ip, replayed).", "result")
	m.records = ms.Counter("records_inserted_total", "Flow records inserted into ClickHouse.")
	m.insertErrs = ms.CounterVec("insert_errors_total", "Failed ClickHouse operations, by table (flow_staging, flow_commits, flows).", "table")
	m.openFlows = ms.Gauge("open_flows", "Flows being aggregated.")
	m.flushTime = ms.Histogram("flush_seconds", "Time to stage, commit and publish a flush of records.", prometheus.ExponentialBuckets(0.001, 2, 14))
	m.recordsSize = ms.Histogram("flush_records", "Records per flush.", prometheus.ExponentialBuckets(1, 4, 10))
	m.statusErrs = ms.Counter("status_errors_total", "Status reports that could not be published.")
}
