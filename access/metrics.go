package access

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/capstream/capstream/internal/run"
)

// metrics are the API's, named capstream_access_*.
type metrics struct {
	requests  *prometheus.CounterVec
	streamed  *prometheus.CounterVec
	cacheHits *prometheus.CounterVec
	reviews   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	r := run.NewRegistrar(reg, "capstream_access_")
	m := &metrics{
		requests:  r.CounterVec("requests_total", "API requests by endpoint (list, download, merged, clean, flows, other) and HTTP status code.", "endpoint", "code"),
		streamed:  r.CounterVec("streamed_bytes_total", "Response bytes of successful requests, by endpoint.", "endpoint"),
		cacheHits: r.CounterVec("review_cache_hits_total", "Requests answered from the review cache, by review (token, access).", "review"),
		reviews:   r.CounterVec("reviews_total", "TokenReviews and SubjectAccessReviews made, by review (token, access) and result (allowed, rejected, denied, error).", "review", "result"),
	}
	return m, r.Err()
}
