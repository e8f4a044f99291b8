// Package access is capstream's access API: the one user-facing service
// that holds the S3 and ClickHouse credentials, and hands a capture's
// pcaps and flows only to callers Kubernetes says may have them.
//
// Every request carries the caller's Kubernetes bearer token. The API
// checks it with a TokenReview, then asks a SubjectAccessReview whether
// that user may `get` (list, download, query flows) or `delete` (clean)
// the `packetcaptures/files` subresource of `projectcalico.org` in the
// capture's namespace, Calico Enterprise's gate for capture files. Allowed
// reviews are cached briefly (Config.ReviewCacheTTL), keyed by the
// token's SHA-256, never the token.
//
// Lifecycle: New checks the configuration and builds the metrics; Run
// listens and serves until its context ends, then shuts down within a
// grace period. Run owns every goroutine. Handler serves the same routes
// without a listener, for embedding.
package access

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/minio/minio-go/v7"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/capstream/capstream/internal/run"
)

// Deps are the API's collaborators, all built by the caller.
type Deps struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Kube creates TokenReviews and SubjectAccessReviews as the API's own
	// identity.
	Kube kubernetes.Interface
	// Dynamic reads PacketCaptures (their UID).
	Dynamic dynamic.Interface
	// S3 and Bucket hold the pcap objects.
	S3     *minio.Client
	Bucket string
	// ClickHouse is a connection as the read-only user.
	ClickHouse driver.Conn
	// OnQuery, when set, is called with every flows query and its bound
	// values just before they are sent: an audit hook (tests record what
	// reaches ClickHouse with it). It must not block.
	OnQuery func(query string, args []any)
}

// Server is the access API.
type Server struct {
	cfg     Config
	deps    Deps
	log     *slog.Logger
	metrics *metrics
	reviews *reviewCache
	tls     *tls.Config
	ready   run.BoundAddr
	bound   atomic.Bool
}

// New checks the configuration and the dependencies; it does no I/O.
func New(cfg Config, deps Deps) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Logger == nil || deps.Registerer == nil || deps.Kube == nil || deps.Dynamic == nil || deps.S3 == nil || deps.Bucket == "" || deps.ClickHouse == nil {
		return nil, errors.New("access: every dependency is required (logger, registerer, kube, dynamic, s3 and bucket, clickhouse)")
	}
	m, err := newMetrics(deps.Registerer)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, deps: deps, log: deps.Logger.With("component", "access"), metrics: m,
		reviews: newReviewCache(cfg.ReviewCacheSize, cfg.ReviewCacheTTL), ready: run.NewBoundAddr()}
	if cfg.CertFile != "" {
		pair, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("access.certFile %s, keyFile %s: %w", cfg.CertFile, cfg.KeyFile, err)
		}
		s.tls = &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	}
	return s, nil
}

// Ready reports whether the API listens.
func (s *Server) Ready() error {
	if !s.bound.Load() {
		return errors.New("not listening yet")
	}
	return nil
}

// Addr returns the address the API listens on once Run has bound it.
func (s *Server) Addr(ctx context.Context) (net.Addr, error) { return s.ready.Wait(ctx) }

// maxHeaderBytes bounds a request's line and headers. It is above
// flowfilter.MaxLength many times over, so an overlong filter reaches the
// parser and gets its message.
const maxHeaderBytes = 256 << 10

// Run listens on Config.Listen (TLS unless Plaintext) and serves until
// ctx ends.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", s.cfg.Listen, err)
	}
	if s.tls != nil {
		ln = tls.NewListener(ln, s.tls)
	}
	// No write timeout: a download lasts as long as it lasts; a stalled
	// client is cut by the TCP stack, not by a guess of its speed.
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		MaxHeaderBytes: maxHeaderBytes, ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	s.ready.Set(ln.Addr())
	s.bound.Store(true)
	scheme := "https://"
	if s.tls == nil {
		scheme = "http://"
	}
	s.log.Info("serving the access API", "url", scheme+ln.Addr().String(), "tls", s.tls != nil)
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", s.cfg.Listen, err)
	case <-ctx.Done():
	}
	s.bound.Store(false)
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		// Downloads still running after the grace period are cut.
		_ = srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Route prefix: /v1/namespaces/{ns}/packetcaptures/{name}/...
const capturePath = "/v1/namespaces/{ns}/packetcaptures/{name}/"

// Handler serves the API's routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET "+capturePath+"files", s.route("list", verbGet, s.listFiles))
	mux.Handle("DELETE "+capturePath+"files", s.route("clean", verbDelete, s.cleanFiles))
	mux.Handle("GET "+capturePath+"files/{key...}", s.route("download", verbGet, s.getFile))
	mux.Handle("GET "+capturePath+"merged", s.route("merged", verbGet, s.merged))
	mux.Handle("GET "+capturePath+"flows", s.route("flows", verbGet, s.flows))
	mux.Handle("/", s.route("other", "", nil))
	return mux
}

// Error is the body of every error response. It never holds the token.
type Error struct {
	Error string `json:"error"`
	// UIDs lists the capture UIDs that have objects under the name, when
	// the request did not say which one (409).
	UIDs []UIDObjects `json:"uids,omitempty"`
}

// apiError is an error with its HTTP status.
type apiError struct {
	code int
	msg  string
	uids []UIDObjects
}

func (e *apiError) Error() string { return e.msg }

func fail(code int, format string, args ...any) *apiError {
	return &apiError{code: code, msg: fmt.Sprintf(format, args...)}
}

// request is one authorized request on one capture.
type request struct {
	w         http.ResponseWriter
	r         *http.Request
	namespace string
	name      string
	user      string
	endpoint  string
}

// statusWriter records the status code and counts bytes for metrics.
type statusWriter struct {
	http.ResponseWriter
	code  int
	bytes int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// route wraps a handler in what every endpoint does, in this order:
// authenticate (401), check the names (400), authorize verb on the
// capture's packetcaptures/files (403), then serve. Unknown paths are
// authenticated too, so the API tells nothing to a caller without a
// valid token.
func (s *Server) route(endpoint, verb string, h func(*request) error) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w := &statusWriter{ResponseWriter: rw}
		defer func() {
			code := w.code
			if code == 0 {
				code = http.StatusOK
			}
			s.metrics.requests.WithLabelValues(endpoint, fmt.Sprint(code)).Inc()
			if w.bytes > 0 && code == http.StatusOK {
				s.metrics.streamed.WithLabelValues(endpoint).Add(float64(w.bytes))
			}
		}()
		err := s.serve(w, r, endpoint, verb, h)
		if err == nil {
			return
		}
		var ae *apiError
		if !errors.As(err, &ae) {
			s.log.Warn("request failed", "endpoint", endpoint, "error", err)
			ae = fail(http.StatusInternalServerError, "internal error")
		}
		if w.code != 0 {
			// The body is under way: cut the connection so the client
			// sees a truncated transfer, never a complete-looking one.
			s.log.Warn("stream cut", "endpoint", endpoint, "error", ae.msg)
			panic(http.ErrAbortHandler)
		}
		writeJSON(w, ae.code, Error{Error: ae.msg, UIDs: ae.uids})
	})
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request, endpoint, verb string, h func(*request) error) error {
	user, err := s.authenticate(r)
	if err != nil {
		if ae := (*apiError)(nil); errors.As(err, &ae) && ae.code == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Bearer realm="capstream"`)
		}
		return err
	}
	if h == nil {
		return fail(http.StatusNotFound, "no such endpoint: see /v1/namespaces/{namespace}/packetcaptures/{name}/{files,merged,flows}")
	}
	req := &request{w: w, r: r, namespace: r.PathValue("ns"), name: r.PathValue("name"), user: user.Username, endpoint: endpoint}
	if err := checkNames(req.namespace, req.name); err != nil {
		return err
	}
	if err := s.authorize(r.Context(), r, user, verb, req.namespace, req.name); err != nil {
		return err
	}
	return h(req)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(true)
	_ = enc.Encode(v)
}
