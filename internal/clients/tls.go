package clients

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// TLSConfig is the TLS of one client: which CAs it trusts and, for servers
// that verify clients, which certificate it presents. Every path is a PEM
// file, typically a mounted Secret; nothing is read from the
// configuration's own text.
type TLSConfig struct {
	// CAFile is the bundle of CAs the server's certificate must chain
	// to. Empty: the system's roots.
	CAFile string `yaml:"caFile"`
	// CertFile and KeyFile are the client certificate and its key, for
	// servers that require one. Both or neither.
	CertFile string `yaml:"certFile"`
	KeyFile  string `yaml:"keyFile"`
	// ServerName is the name the server's certificate must carry, when
	// it is not the host dialled (an IP address, a Service's short name).
	ServerName string `yaml:"serverName"`
	// InsecureSkipVerify accepts any server certificate, so anyone on the
	// path can read and change the traffic. Only for debugging; a service
	// logs a warning at start when it is set.
	InsecureSkipVerify bool `yaml:"insecureSkipVerify"`
}

// Set reports whether any TLS setting is given.
func (t TLSConfig) Set() bool { return t != TLSConfig{} }

// Validate checks that the files exist and hold what they should: a CA
// bundle with at least one certificate, a certificate and key that match.
// section names the setting in errors ("nats.tls").
func (t TLSConfig) Validate(section string) error {
	_, err := t.Config(section)
	return err
}

// Config builds the crypto/tls configuration. service names the setting in
// errors, so a wrong or missing file says whose it is.
func (t TLSConfig) Config(service string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify} //nolint:gosec // an explicit, warned setting
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%s.caFile: %w", service, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s.caFile %s: no PEM certificate in it", service, t.CAFile)
		}
		cfg.RootCAs = pool
	}
	switch {
	case t.CertFile != "" && t.KeyFile != "":
		pair, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("%s.certFile %s, keyFile %s: %w", service, t.CertFile, t.KeyFile, err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	case t.CertFile != "" || t.KeyFile != "":
		return nil, fmt.Errorf("%s: set both certFile and keyFile, or neither", service)
	}
	return cfg, nil
}

// Warning is the line a service logs at start about this TLS setting, or
// "" when there is nothing to warn about.
func (t TLSConfig) Warning(service string) string {
	if t.InsecureSkipVerify {
		return service + ".insecureSkipVerify is set: the server's certificate is not verified, so the connection can be read and changed on its way"
	}
	return ""
}

// certError explains a failed TLS handshake in the terms of the settings:
// the service and the CA file that did not verify the server, which is
// what a user needs to fix it.
func certError(service string, t TLSConfig, err error) error {
	var unknown x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	var host x509.HostnameError
	var verify *tls.CertificateVerificationError
	ca := "the system's roots"
	if t.CAFile != "" {
		ca = t.CAFile
	}
	switch {
	case errors.As(err, &host):
		return fmt.Errorf("%s: the server's certificate is not valid for %s (set %s.serverName to the name it carries): %w", service, host.Host, service, err)
	case errors.As(err, &unknown), errors.As(err, &invalid), errors.As(err, &verify):
		return fmt.Errorf("%s: the server's certificate does not verify against the CA %s (%s.caFile): %w", service, ca, service, err)
	}
	return err
}
