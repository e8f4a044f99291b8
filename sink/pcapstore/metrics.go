package pcapstore

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/capstream/capstream/internal/run"
)

type metrics struct {
	packets     prometheus.Counter
	objects     *prometheus.CounterVec
	errs        *prometheus.CounterVec
	open        prometheus.Gauge
	buffered    prometheus.Gauge
	putTime     prometheus.Histogram
	objectBytes prometheus.Histogram
}

func newMetrics(r prometheus.Registerer) (*metrics, error) {
	ms := run.NewRegistrar(r, "")
	m := &metrics{
		packets:  ms.Counter("capstream_sink_pcap_packets_total", "Packets written into completed objects."),
		objects:  ms.CounterVec("capstream_sink_pcap_objects_total", "Objects completed, by reason (size, age, stop, shutdown, memory, rotate).", "reason"),
		errs:     ms.CounterVec("capstream_sink_pcap_errors_total", "Failed dependency operations, by operation.", "op"),
		open:     ms.Gauge("capstream_sink_pcap_open_objects", "Objects being filled."),
		buffered: ms.Gauge("capstream_sink_pcap_buffered_bytes", "Bytes held in open objects."),
		putTime: ms.Histogram("capstream_sink_pcap_complete_seconds", "Time from sealing an object to its batches being acked (queue, upload, index).",
			prometheus.ExponentialBuckets(0.005, 2, 14)),
		objectBytes: ms.Histogram("capstream_sink_pcap_object_bytes", "Size of completed objects.", prometheus.ExponentialBuckets(4096, 4, 10)),
	}
	return m, ms.Err()
}
