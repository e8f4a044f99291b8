// Package accesstest runs the access API in a test, against the real
// services of internal/testenv, and calls it as a user would. It is test
// support, never linked into a binary.
package accesstest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/capstream/capstream/access"
	"github.com/capstream/capstream/internal/testenv"
	chschema "github.com/capstream/capstream/schemas/clickhouse"
)

// Stores are what the access API reads in a test: the kube-apiserver, a
// private bucket and a private, migrated ClickHouse database; and Deps,
// the API's collaborators connected to them (flows read as deps.sh's
// read-only user), with Registry as their Registerer.
type Stores struct {
	Kube     *testenv.KubeEnv
	Bucket   *testenv.S3Bucket
	DB       *testenv.ClickHouseDB
	Registry *prometheus.Registry
	Deps     access.Deps
}

// NewStores sets up the stores for one test; all of them go when it ends.
func NewStores(t *testing.T) *Stores {
	t.Helper()
	s := &Stores{Kube: testenv.Kube(t), Bucket: testenv.S3(t), DB: testenv.ClickHouse(t), Registry: prometheus.NewRegistry()}
	if _, err := chschema.Migrate(t.Context(), s.DB.Conn); err != nil {
		t.Fatal(err)
	}
	chCfg, reader := testenv.ClickHouseReaderConfig(s.DB.Database)
	if !reader {
		t.Logf("%s is not set (services from an older deps.sh): flows are queried as the default user with readonly=1", testenv.EnvClickHouseReaderPassword)
	}
	ch, err := chCfg.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ch.Close() })
	s3, err := s.Bucket.Config().Client()
	if err != nil {
		t.Fatal(err)
	}
	kube, err := kubernetes.NewForConfig(s.Kube.Config)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(s.Kube.Config)
	if err != nil {
		t.Fatal(err)
	}
	s.Deps = access.Deps{Logger: testenv.Logger(t), Registerer: s.Registry, Kube: kube, Dynamic: dyn,
		S3: s3, Bucket: s.Bucket.Bucket, ClickHouse: ch}
	return s
}

// API is an access API running until the test ends, and a client of it.
type API struct {
	Server *access.Server
	// URL is https://127.0.0.1:Port, where Run listens.
	URL, Port string
	// Client trusts the CA of the API's certificate; its timeout is five
	// minutes.
	Client *http.Client
}

// Start builds the API from cfg and deps, runs it until the test ends
// (failing the test if Run does not return nil) and waits for its
// address. caFile is the CA that signed cfg's certificate.
func Start(t *testing.T, cfg access.Config, deps access.Deps, caFile string) *API {
	t.Helper()
	srv, err := access.New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Start(t, "access", srv.Run)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	addr, err := srv.Addr(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	_, port, _ := net.SplitHostPort(addr.String())
	return &API{Server: srv, URL: "https://127.0.0.1:" + port, Port: port,
		Client: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 5 * time.Minute}}
}

// Do makes one request with token (none when empty) and returns the
// status, body and headers.
func (a *API) Do(t *testing.T, method, path, token string) (int, []byte, http.Header) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, a.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := a.Client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp.StatusCode, body, resp.Header
}
