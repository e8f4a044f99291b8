package sinktest

import (
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/capstream/capstream/internal/clients"
	"github.com/capstream/capstream/internal/testenv"
)

// S3Gate is an HTTPS reverse proxy in front of the test S3 server that
// can refuse, for as long as a test wants, the writes of keys containing
// a marker, with 503 SlowDown, as an object store throttling one prefix
// does. Everything else goes through unchanged (the Host header too, so
// the clients' signatures still verify).
type S3Gate struct {
	// Addr is host:port to use as the S3 endpoint, over HTTPS.
	Addr string
	// CAFile is the CA of the gate's certificate.
	CAFile string

	mu      sync.Mutex
	marker  string
	refused atomic.Int64
}

// NewS3Gate starts a gate in front of upstream until the test ends.
func NewS3Gate(t *testing.T, upstream clients.S3Config) *S3Gate {
	t.Helper()
	tc, err := upstream.TLS.Config("s3.tls")
	if err != nil {
		t.Fatal(err)
	}
	target := &url.URL{Scheme: "https", Host: upstream.Endpoint}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: false}
	files := testenv.TLS(t)
	pair, err := tls.LoadX509KeyPair(files.ServerCert, files.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	g := &S3Gate{CAFile: files.CA}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if (r.Method == http.MethodPut || r.Method == http.MethodPost) && g.blocks(r.URL.Path) {
			g.refused.Add(1)
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`))
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = ln
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	g.Addr = ln.Addr().String()
	return g
}

func (g *S3Gate) blocks(path string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.marker != "" && strings.Contains(path, g.marker)
}

// Block refuses the writes of keys whose path contains marker; "" lets
// everything through again.
func (g *S3Gate) Block(marker string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.marker = marker
}

// Refused is the number of requests refused so far.
func (g *S3Gate) Refused() int64 { return g.refused.Load() }
