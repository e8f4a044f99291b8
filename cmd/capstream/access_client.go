package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/capstream/capstream/access"
	"github.com/capstream/capstream/internal/pcapobjects"
)

// The access API's location, read like every user-command setting.
const (
	envAccessURL = "CAPSTREAM_ACCESS_URL"
	envAccessCA  = "CAPSTREAM_ACCESS_CA"
)

// apiFlags choose between the access API (the default) and direct S3 and
// ClickHouse access (--direct, an admin mode that needs the stores'
// credentials).
type apiFlags struct {
	server string
	caFile string
	direct bool
}

func (a *apiFlags) add(f *pflag.FlagSet) {
	f.StringVar(&a.server, "server", os.Getenv(envAccessURL), "the access API, https://host:port ($"+envAccessURL+")")
	f.StringVar(&a.caFile, "certificate-authority", os.Getenv(envAccessCA), "PEM file of the CA that signs the access API's certificate ($"+envAccessCA+"; default the system's roots)")
	f.BoolVar(&a.direct, "direct", false, "admin mode: read S3 and ClickHouse directly with their credentials instead of through the access API")
}

// apiClient calls the access API as the kubeconfig's current user.
type apiClient struct {
	base  *url.URL
	http  *http.Client
	token string
}

// client builds the API client: the server URL and CA from the flags,
// the bearer token of the kubeconfig's current user (its token or token
// file, as kubectl sends it).
func (a *apiFlags) client(kube *kubeFlags) (*apiClient, error) {
	if a.server == "" {
		return nil, usageError{Err: fmt.Errorf("no access API: set --server or %s (or --direct, the admin mode reading S3 and ClickHouse with their credentials)", envAccessURL)}
	}
	u, err := url.Parse(a.server)
	if err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return nil, usageError{Err: fmt.Errorf("--server %q: want https://host:port (the token is never sent in clear text)", a.server)}
	}
	u.Path = ""
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if a.caFile != "" {
		pem, err := os.ReadFile(a.caFile)
		if err != nil {
			return nil, usageError{Err: fmt.Errorf("--certificate-authority: %w", err)}
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, usageError{Err: fmt.Errorf("--certificate-authority %s: no PEM certificate", a.caFile)}
		}
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if kube.kubeconfig != "" {
		rules.ExplicitPath = kube.kubeconfig
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, usageError{Err: fmt.Errorf("kubeconfig: %w", err)}
	}
	token := cfg.BearerToken
	if token == "" && cfg.BearerTokenFile != "" {
		b, err := os.ReadFile(cfg.BearerTokenFile)
		if err != nil {
			return nil, usageError{Err: fmt.Errorf("kubeconfig token file: %w", err)}
		}
		token = strings.TrimSpace(string(b))
	}
	if token == "" {
		return nil, usageError{Err: errors.New("the kubeconfig's current user has no bearer token (token or tokenFile), which the access API needs")}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	return &apiClient{base: u, http: &http.Client{Transport: tr}, token: token}, nil
}

// do sends one request on a capture's path and returns the response when
// it is 200; any other status becomes an error classified for the exit
// code, carrying the API's message.
func (c *apiClient) do(ctx context.Context, method, namespace, name, rest string, q url.Values) (*http.Response, error) {
	u := *c.base
	u.Path = "/v1/namespaces/" + url.PathEscape(namespace) + "/packetcaptures/" + url.PathEscape(name) + "/" + rest
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("access API %s: %w: %v", c.base.Host, errUnavailable, err)
	}
	if resp.StatusCode == http.StatusOK {
		return resp, nil
	}
	defer resp.Body.Close()
	var e access.Error
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&e); err != nil || e.Error == "" {
		e.Error = resp.Status
	}
	msg := fmt.Sprintf("access API: %s %s/%s: %s", strings.ToLower(method), namespace, name, e.Error)
	for i, u := range e.UIDs {
		if i == 0 {
			msg += ":"
		}
		msg += fmt.Sprintf("\n  %s  %d objects", u.UID, u.Objects)
	}
	switch {
	case resp.StatusCode == http.StatusBadRequest || resp.StatusCode == http.StatusConflict || resp.StatusCode == http.StatusRequestEntityTooLarge:
		return nil, usageError{Err: errors.New(msg)}
	case resp.StatusCode == http.StatusNotFound:
		return nil, fmt.Errorf("%s: %w", msg, errNotFound)
	case resp.StatusCode >= 500:
		return nil, fmt.Errorf("%s: %w", msg, errUnavailable)
	}
	return nil, errors.New(msg) // 401, 403
}

// getJSON decodes a 200 answer into v.
func (c *apiClient) getJSON(ctx context.Context, method, namespace, name, rest string, q url.Values, v any) error {
	resp, err := c.do(ctx, method, namespace, name, rest, q)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("access API: decode answer: %w", err)
	}
	return nil
}

// timeQuery adds a time to the query when set.
func timeQuery(q url.Values, name string, t time.Time) {
	if !t.IsZero() {
		q.Set(name, t.UTC().Format(time.RFC3339Nano))
	}
}

// copyViaAPI is copy through the access API: list the capture's objects
// (the API picks the UID as copy does directly), download each, verified,
// and merge them here with --merge.
func copyViaAPI(ctx context.Context, stdout, stderr io.Writer, api *apiClient, r copyRequest) error {
	q := url.Values{}
	if r.uid != "" {
		q.Set("uid", r.uid)
	}
	if r.node != "" {
		q.Set("node", r.node)
	}
	timeQuery(q, "since", r.since)
	timeQuery(q, "until", r.until)
	var list access.FileList
	if err := api.getJSON(ctx, http.MethodGet, r.namespace, r.name, "files", q, &list); err != nil {
		return err
	}
	if len(list.Objects) == 0 {
		return fmt.Errorf("no pcap objects for capture %s/%s (uid %s): %w", r.namespace, r.name, list.UID, errNotFound)
	}
	if !pcapobjects.ValidUID(list.UID) {
		return fmt.Errorf("access API: unusable uid %q", list.UID)
	}
	open := func(ctx context.Context, o access.Object) (io.ReadCloser, error) {
		resp, err := api.do(ctx, http.MethodGet, r.namespace, r.name, "files/"+o.Key, url.Values{"uid": {list.UID}})
		if err != nil {
			return nil, err
		}
		return resp.Body, nil
	}
	return copyObjects(ctx, stdout, stderr, r, list.UID, "", list.Objects, open)
}

// cleanViaAPI is clean through the access API.
func cleanViaAPI(ctx context.Context, stdout io.Writer, api *apiClient, namespace, name, uid string) error {
	q := url.Values{}
	if uid != "" {
		q.Set("uid", uid)
	}
	var d access.Deleted
	if err := api.getJSON(ctx, http.MethodDelete, namespace, name, "files", q, &d); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "deleted %d objects of capture uid %s\n", d.Deleted, d.UID)
	return nil
}
