package pcapstore

import "github.com/prometheus/client_golang/prometheus"

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
	m := &metrics{
		packets: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "capstream_sink_pcap_packets_total", Help: "Packets written into completed objects.",
		}),
		objects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "capstream_sink_pcap_objects_total", Help: "Objects completed, by reason (size, age, stop, shutdown, memory, rotate).",
		}, []string{"reason"}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "capstream_sink_pcap_errors_total", Help: "Failed dependency operations, by operation.",
		}, []string{"op"}),
		open: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "capstream_sink_pcap_open_objects", Help: "Objects being filled.",
		}),
		buffered: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "capstream_sink_pcap_buffered_bytes", Help: "Bytes held in open objects.",
		}),
		putTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "capstream_sink_pcap_complete_seconds", Help: "Time from sealing an object to its batches being acked (queue, upload, index).",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}),
		objectBytes: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "capstream_sink_pcap_object_bytes", Help: "Size of completed objects.",
			Buckets: prometheus.ExponentialBuckets(4096, 4, 10),
		}),
	}
	for _, c := range []prometheus.Collector{m.packets, m.objects, m.errs, m.open, m.buffered, m.putTime, m.objectBytes} {
		if err := r.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
