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

func newMetrics(r prometheus.Registerer) (*metrics, error) {
	ms := run.NewRegistrar(r, "")
	m := &metrics{
		packets:    ms.CounterVec("capstream_sink_flows_packets_total", "Packets seen, by result (flow, malformed, not_ip, replayed).", "result"),
		records:    ms.Counter("capstream_sink_flows_records_inserted_total", "Flow records inserted into ClickHouse."),
		insertErrs: ms.CounterVec("capstream_sink_flows_insert_errors_total", "Failed ClickHouse operations, by table (flow_staging, flow_commits, flows).", "table"),
		openFlows:  ms.Gauge("capstream_sink_flows_open_flows", "Flows being aggregated."),
		flushTime: ms.Histogram("capstream_sink_flows_flush_seconds", "Time to stage, commit and publish a flush of records.",
			prometheus.ExponentialBuckets(0.001, 2, 14)),
		recordsSize: ms.Histogram("capstream_sink_flows_flush_records", "Records per flush.", prometheus.ExponentialBuckets(1, 4, 10)),
		statusErrs:  ms.Counter("capstream_sink_flows_status_errors_total", "Status reports that could not be published."),
	}
	return m, ms.Err()
}
