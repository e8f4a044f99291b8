package router

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/capstream/capstream/internal/run"
)

// metrics are the router's Prometheus series, all prefixed capstream_router_.
type metrics struct {
	leader           prometheus.Gauge
	reconciles       *prometheus.CounterVec
	reconcileSeconds prometheus.Histogram
	reconcilePods    *prometheus.CounterVec
	published        *prometheus.CounterVec
	publishErrors    prometheus.Counter
	loadErrors       prometheus.Counter
	statusReports    *prometheus.CounterVec
	statusWrites     *prometheus.CounterVec
	invalidCaptures  prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	// Every name gets the capstream_router_ prefix at registration.
	r := run.NewRegistrar(reg, "capstream_router_")
	m := &metrics{
		leader:           r.Gauge("leader", "1 while this replica holds the lease and publishes commands."),
		reconciles:       r.CounterVec("reconciles_total", "Capture reconciles by result (ok, error, invalid).", "result"),
		reconcileSeconds: r.Histogram("reconcile_duration_seconds", "Time to reconcile one capture, publishing included.", prometheus.ExponentialBuckets(0.0005, 4, 8)),
		reconcilePods:    r.CounterVec("reconcile_pods_total", "Pods whose endpoint labels a reconcile evaluated the selector on, by lookup (index: the candidates of the label index, list: every pod of the namespace).", "lookup"),
		published:        r.CounterVec("commands_published_total", "Commands published by action (capture, stop).", "action"),
		publishErrors:    r.Counter("command_publish_errors_total", "Command publishes JetStream refused or did not acknowledge."),
		loadErrors:       r.Counter("command_load_errors_total", "Commands in the stream that could not be decoded when loading; they are rewritten."),
		statusReports:    r.CounterVec("status_reports_total", "Status reports consumed by result (applied, stale, unknown_capture, out_of_scope, malformed).", "result"),
		statusWrites:     r.CounterVec("status_writes_total", "PacketCapture status writes by result (written, unchanged, error).", "result"),
		invalidCaptures:  r.Gauge("invalid_captures", "Captures whose spec is invalid (Error condition set)."),
	}
	if err := r.Err(); err != nil {
		return nil, fmt.Errorf("register router metrics: %w", err)
	}
	return m, nil
}
