package netsim

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/sync/errgroup"
)

// Ports the server pod listens on.
const (
	httpPort  = 80
	httpsPort = 443
	dnsPort   = 53
)

// exchangeTimeout bounds one request or query, so a round never outlives
// the next by much.
const exchangeTimeout = 3 * time.Second

// traffic is the servers in the first pod and the clients in the others.
type traffic struct {
	s       *Simulator
	server  *PodNet
	clients []*PodNet
	// host is the name clients put in the HTTP Host header, the TLS SNI
	// and the DNS question, as a cluster DNS name of the server.
	host string
	cert tls.Certificate
	pool *x509.CertPool

	httpLn, tlsLn net.Listener
	dnsConn       net.PacketConn
}

// newTraffic opens the server sockets inside the server pod.
func newTraffic(s *Simulator, pods []*PodNet) (*traffic, error) {
	t := &traffic{s: s, server: pods[0], clients: pods[1:]}
	t.host = fmt.Sprintf("%s.%s.svc.cluster.local", t.server.Name, t.server.Namespace)
	var err error
	if t.cert, t.pool, err = selfSigned(t.host); err != nil {
		return nil, err
	}
	ip := t.server.IP.String()
	err = t.server.Do(func() error {
		var err error
		if t.httpLn, err = net.Listen("tcp4", net.JoinHostPort(ip, fmt.Sprint(httpPort))); err != nil {
			return err
		}
		if t.tlsLn, err = net.Listen("tcp4", net.JoinHostPort(ip, fmt.Sprint(httpsPort))); err != nil {
			return err
		}
		t.dnsConn, err = net.ListenPacket("udp4", net.JoinHostPort(ip, fmt.Sprint(dnsPort)))
		return err
	})
	if err != nil {
		t.close()
		return nil, fmt.Errorf("listen in pod %s: %w", t.server.Name, err)
	}
	return t, nil
}

func (t *traffic) close() {
	for _, c := range []io.Closer{t.httpLn, t.tlsLn, t.dnsConn} {
		// A failed Listen leaves a nil interface, which stays nil as an
		// io.Closer.
		if c != nil {
			_ = c.Close()
		}
	}
}

// start runs the servers and one client loop per client pod in g; all of
// them stop when ctx ends.
func (t *traffic) start(ctx context.Context, g *errgroup.Group) {
	mux := http.NewServeMux()
	page := []byte("<html><body>" + strings.Repeat("capstream demo ", 256) + "</body></html>\n")
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write(page)
	})
	blob := make([]byte, 64<<10)
	_, _ = rand.Read(blob)
	mux.HandleFunc("/download", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(blob)
	})
	plain := &http.Server{Handler: mux, ReadHeaderTimeout: exchangeTimeout}
	secure := &http.Server{Handler: mux, ReadHeaderTimeout: exchangeTimeout}
	tlsLn := tls.NewListener(t.tlsLn, &tls.Config{Certificates: []tls.Certificate{t.cert}, MinVersion: tls.VersionTLS12})
	g.Go(func() error { return serveHTTP(plain, t.httpLn) })
	g.Go(func() error { return serveHTTP(secure, tlsLn) })
	g.Go(func() error { return t.serveDNS() })
	g.Go(func() error {
		<-ctx.Done()
		// Servers stop with the context; Close also ends the DNS loop.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), exchangeTimeout)
		defer cancel()
		_ = plain.Shutdown(sctx)
		_ = secure.Shutdown(sctx)
		_ = t.dnsConn.Close()
		return nil
	})
	for _, c := range t.clients {
		g.Go(func() error { return t.client(ctx, c) })
	}
}

func serveHTTP(srv *http.Server, ln net.Listener) error {
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve http: %w", err)
	}
	return nil
}

// client runs one client pod's rounds until ctx ends.
func (t *traffic) client(ctx context.Context, p *PodNet) error {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := p.Do(func() error {
			var err error
			c, err = (&net.Dialer{Timeout: exchangeTimeout}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	// No keep-alive: every request is its own TCP connection, so flows
	// end with a FIN and reach ClickHouse without waiting for a timeout.
	tr := &http.Transport{
		DialContext:       dial,
		DisableKeepAlives: true,
		TLSClientConfig:   &tls.Config{ServerName: t.host, RootCAs: t.pool, MinVersion: tls.VersionTLS12},
	}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: exchangeTimeout}
	server := t.server.IP.String()
	exchanges := []struct {
		what string
		fn   func(context.Context) error
	}{
		{"http", func(ctx context.Context) error { return get(ctx, hc, "http://"+server+"/", t.host) }},
		{"https", func(ctx context.Context) error { return get(ctx, hc, "https://"+server+"/download", t.host) }},
		{"dns", func(ctx context.Context) error { return t.query(ctx, p, t.host+".", true) }},
		{"dns-nx", func(ctx context.Context) error { return t.query(ctx, p, "nothing.example.", false) }},
	}
	tick := time.NewTicker(t.s.cfg.Interval)
	defer tick.Stop()
	logged := false
	for {
		for _, e := range exchanges {
			if err := e.fn(ctx); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				t.s.failed.Add(1)
				// One warning per client: a broken setup fails every round.
				if !logged {
					t.s.log.Warn("exchange failed", "pod", p.Name, "exchange", e.what, "error", err)
					logged = true
				}
				continue
			}
			t.s.ok.Add(1)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// get fetches url with the Host header set to host and reads the body.
func get(ctx context.Context, hc *http.Client, url, host string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Host = host
	req.Header.Set("User-Agent", "capstream-netsim/1")
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("get %s: %w", url, err)
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return fmt.Errorf("read %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("get %s: status %s", url, resp.Status)
	}
	return nil
}

// query asks the server pod for name's A record from client pod p.
func (t *traffic) query(ctx context.Context, p *PodNet, name string, wantAnswer bool) error {
	var c net.Conn
	err := p.Do(func() error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, "udp4", net.JoinHostPort(t.server.IP.String(), fmt.Sprint(dnsPort)))
		return err
	})
	if err != nil {
		return fmt.Errorf("dial dns: %w", err)
	}
	defer c.Close()
	var idb [2]byte
	_, _ = rand.Read(idb[:])
	id := uint16(idb[0])<<8 | uint16(idb[1])
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, RecursionDesired: true})
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return err
	}
	qn, err := dnsmessage.NewName(name)
	if err != nil {
		return fmt.Errorf("dns name %s: %w", name, err)
	}
	if err := b.Question(dnsmessage.Question{Name: qn, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}); err != nil {
		return err
	}
	msg, err := b.Finish()
	if err != nil {
		return err
	}
	_ = c.SetDeadline(time.Now().Add(exchangeTimeout))
	if _, err := c.Write(msg); err != nil {
		return fmt.Errorf("send dns query: %w", err)
	}
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if err != nil {
		return fmt.Errorf("read dns answer: %w", err)
	}
	var parser dnsmessage.Parser
	h, err := parser.Start(buf[:n])
	if err != nil {
		return fmt.Errorf("parse dns answer: %w", err)
	}
	if h.ID != id {
		return fmt.Errorf("dns answer id %d, want %d", h.ID, id)
	}
	if wantAnswer != (h.RCode == dnsmessage.RCodeSuccess) {
		return fmt.Errorf("dns answer for %s: rcode %s", name, h.RCode)
	}
	return nil
}

// serveDNS answers A queries for the server's own name with its address
// and everything else with NXDOMAIN, until the socket is closed.
func (t *traffic) serveDNS() error {
	buf := make([]byte, 512)
	for {
		n, from, err := t.dnsConn.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("dns server: %w", err)
		}
		resp, err := t.answer(buf[:n])
		if err != nil {
			continue // not a query we can parse: drop it, as servers do
		}
		_, _ = t.dnsConn.WriteTo(resp, from)
	}
}

func (t *traffic) answer(query []byte) ([]byte, error) {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil, err
	}
	q, err := p.Question()
	if err != nil {
		return nil, err
	}
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired}
	known := strings.EqualFold(q.Name.String(), t.host+".") && q.Type == dnsmessage.TypeA
	if !known {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(q); err != nil {
		return nil, err
	}
	if known {
		if err := b.StartAnswers(); err != nil {
			return nil, err
		}
		var a [4]byte
		copy(a[:], t.server.IP.To4())
		if err := b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 30}, dnsmessage.AResource{A: a}); err != nil {
			return nil, err
		}
	}
	return b.Finish()
}

// selfSigned makes a certificate for host that is its own root, so the
// clients verify the server properly instead of skipping verification.
func selfSigned(host string) (tls.Certificate, *x509.CertPool, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: host, Organization: []string{"capstream netsim"}},
		DNSNames:              []string{host},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("create certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("parse certificate: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool, nil
}
