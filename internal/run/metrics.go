package run

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Registrar builds a component's metrics and registers each as it is
// built, under the component's name prefix (capstream_<component>_), so a
// declaration is one line and no metric can be declared but left
// unregistered. Errors are collected; Err returns them once every metric
// is declared.
type Registrar struct {
	reg  prometheus.Registerer
	errs []error
}

// NewRegistrar registers into reg with every name prefixed by prefix.
func NewRegistrar(reg prometheus.Registerer, prefix string) *Registrar {
	return &Registrar{reg: prometheus.WrapRegistererWithPrefix(prefix, reg)}
}

func register[C prometheus.Collector](r *Registrar, c C) C {
	if err := r.reg.Register(c); err != nil {
		r.errs = append(r.errs, err)
	}
	return c
}

// Counter declares a counter.
func (r *Registrar) Counter(name, help string) prometheus.Counter {
	return register(r, prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help}))
}

// CounterVec declares a counter with labels.
func (r *Registrar) CounterVec(name, help string, labels ...string) *prometheus.CounterVec {
	return register(r, prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels))
}

// Gauge declares a gauge.
func (r *Registrar) Gauge(name, help string) prometheus.Gauge {
	return register(r, prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help}))
}

// GaugeVec declares a gauge with labels.
func (r *Registrar) GaugeVec(name, help string, labels ...string) *prometheus.GaugeVec {
	return register(r, prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels))
}

// Histogram declares a histogram with the given buckets.
func (r *Registrar) Histogram(name, help string, buckets []float64) prometheus.Histogram {
	return register(r, prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}))
}

// Err returns every registration error, joined, or nil.
func (r *Registrar) Err() error { return errors.Join(r.errs...) }
