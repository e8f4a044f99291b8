package flowstore

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	packets     *prometheus.CounterVec
	records     prometheus.Counter
	insertErrs  *prometheus.CounterVec
	openFlows   prometheus.Gauge
	flushTime   prometheus.Histogram
	recordsSize prometheus.Histogram
}

func newMetrics(r prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		packets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "capstream_sink_flows_packets_total", Help: "Packets seen, by result (flow, malformed, not_ip, replayed).",
		}, []string{"result"}),
		records: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "capstream_sink_flows_records_inserted_total", Help: "Flow records inserted into ClickHouse.",
		}),
		insertErrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "capstream_sink_flows_insert_errors_total", Help: "Failed ClickHouse operations, by table (flow_staging, flow_commits, flows).",
		}, []string{"table"}),
		openFlows: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "capstream_sink_flows_open_flows", Help: "Flows being aggregated.",
		}),
		flushTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "capstream_sink_flows_flush_seconds", Help: "Time to stage, commit and publish a flush of records.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		recordsSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "capstream_sink_flows_flush_records", Help: "Records per flush.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 10),
		}),
	}
	for _, c := range []prometheus.Collector{m.packets, m.records, m.insertErrs, m.openFlows, m.flushTime, m.recordsSize} {
		if err := r.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
