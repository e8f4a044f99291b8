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
	indexRows   prometheus.Histogram
}

// register registers the pcap sink's metrics; the runner's registrar adds
// the capstream_sink_pcap_ prefix.
func (m *metrics) register(ms *run.Registrar) {
	m.packets = ms.Counter("packets_total", "Packets written into completed objects.")
	m.objects = ms.CounterVec("objects_total", "Objects completed, by reason (size, age, stop, shutdown, memory, rotate).", "reason")
	m.errs = ms.CounterVec("errors_total", "Failed dependency operations, by operation.", "op")
	m.open = ms.Gauge("open_objects", "Objects being filled.")
	m.buffered = ms.Gauge("buffered_bytes", "Bytes held in open objects.")
	m.putTime = ms.Histogram("complete_seconds", "Time from sealing an object to its batches being acked (queue, upload, index).", prometheus.ExponentialBuckets(0.005, 2, 14))
	m.objectBytes = ms.Histogram("object_bytes", "Size of completed objects.", prometheus.ExponentialBuckets(4096, 4, 10))
	m.indexRows = ms.Histogram("index_insert_rows", "Rows of each pcap_objects INSERT (the objects uploaded while the insert before ran).", prometheus.ExponentialBuckets(1, 2, 11))
}
