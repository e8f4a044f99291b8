package natsauth

import "github.com/prometheus/client_golang/prometheus"

// metrics are the callout's: what it granted and refused, and how long
// the API server took.
type metrics struct {
	allowed prometheus.Counter
	refused *prometheus.CounterVec
	review  prometheus.Histogram
}

func newMetrics(r prometheus.Registerer) *metrics {
	m := &metrics{
		allowed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "capstream_natsauth_allowed_total",
			Help: "Connections granted a producer identity.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "capstream_natsauth_refused_total",
			Help: "Authorization requests refused, by reason.",
		}, []string{"reason"}),
		review: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "capstream_natsauth_review_duration_seconds",
			Help:    "Duration of the TokenReviews, errors included.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 13),
		}),
	}
	for _, r := range reasons {
		m.refused.WithLabelValues(string(r))
	}
	r.MustRegister(m.allowed, m.refused, m.review)
	return m
}
