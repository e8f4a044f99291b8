package router

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the router's Prometheus series, all prefixed capstream_router_.
type metrics struct {
	leader           prometheus.Gauge
	reconciles       *prometheus.CounterVec
	reconcileSeconds prometheus.Histogram
	published        *prometheus.CounterVec
	publishErrors    prometheus.Counter
	loadErrors       prometheus.Counter
	statusReports    *prometheus.CounterVec
	statusWrites     *prometheus.CounterVec
	invalidCaptures  prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	// Every name gets the capstream_router_ prefix at registration.
	reg = prometheus.WrapRegistererWithPrefix("capstream_router_", reg)
	m := &metrics{
		leader: prometheus.NewGauge(prometheus.GaugeOpts{Name: "leader",
			Help: "1 while this replica holds the lease and publishes commands."}),
		reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "reconciles_total",
			Help: "Capture reconciles by result (ok, error, invalid)."}, []string{"result"}),
		reconcileSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "reconcile_duration_seconds",
			Help: "Time to reconcile one capture, publishing included.", Buckets: prometheus.ExponentialBuckets(0.0005, 4, 8)}),
		published: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "commands_published_total",
			Help: "Commands published by action (capture, stop)."}, []string{"action"}),
		publishErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "command_publish_errors_total",
			Help: "Command publishes JetStream refused or did not acknowledge."}),
		loadErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "command_load_errors_total",
			Help: "Commands in the stream that could not be decoded when loading; they are rewritten."}),
		statusReports: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "status_reports_total",
			Help: "Status reports consumed by result (applied, stale, unknown_capture, out_of_scope, malformed)."}, []string{"result"}),
		statusWrites: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "status_writes_total",
			Help: "PacketCapture status writes by result (written, unchanged, error)."}, []string{"result"}),
		invalidCaptures: prometheus.NewGauge(prometheus.GaugeOpts{Name: "invalid_captures",
			Help: "Captures whose spec is invalid (Error condition set)."}),
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.leader, m.reconciles, m.reconcileSeconds, m.published, m.publishErrors,
		m.loadErrors, m.statusReports, m.statusWrites, m.invalidCaptures} {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("register router metrics: %w", err)
	}
	return m, nil
}
