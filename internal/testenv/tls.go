package testenv

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// TLSFiles is TLS material made by deploy/dev/certs.sh with openssl: a CA,
// a server certificate for localhost and 127.0.0.1, a client certificate,
// and a second CA that signed none of them.
type TLSFiles struct {
	Dir                   string
	CA, OtherCA           string
	ServerCert, ServerKey string
	ClientCert, ClientKey string
}

// TLS makes fresh TLS material for one test in its temp dir.
func TLS(t testing.TB) TLSFiles {
	t.Helper()
	_, here, _, _ := runtime.Caller(0)
	script := filepath.Join(filepath.Dir(here), "..", "..", "deploy", "dev", "certs.sh")
	dir := t.TempDir()
	if out, err := exec.Command("bash", script, dir).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", script, err, out)
	}
	return TLSFiles{
		Dir: dir, CA: filepath.Join(dir, "ca.pem"), OtherCA: filepath.Join(dir, "other-ca.pem"),
		ServerCert: filepath.Join(dir, "server.pem"), ServerKey: filepath.Join(dir, "server-key.pem"),
		ClientCert: filepath.Join(dir, "client.pem"), ClientKey: filepath.Join(dir, "client-key.pem"),
	}
}

// versitygw is the S3 server binary deps.sh installed.
func versitygw(t testing.TB) string {
	t.Helper()
	if p := Getenv("CAPSTREAM_TEST_VERSITYGW"); p != "" {
		return p
	}
	home, _ := os.UserHomeDir()
	matches, _ := filepath.Glob(filepath.Join(home, ".cache", "capstream", "versitygw-*", "versitygw"))
	if len(matches) == 0 {
		unavailable(t, "versitygw", os.ErrNotExist)
	}
	return matches[len(matches)-1]
}

// S3TLS starts a versitygw of the test's own that serves HTTPS only, with
// files' server certificate, and returns its address and root keys with a
// bucket made. It stops in t.Cleanup.
func S3TLS(t testing.TB, files TLSFiles) (endpoint, accessKey, secretKey, bucket string) {
	t.Helper()
	skipShort(t, "S3")
	bin := versitygw(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	endpoint = l.Addr().String()
	l.Close()
	accessKey, secretKey, bucket = "tls"+randomHex(4), randomHex(20), "tls-"+randomHex(4)
	data := t.TempDir()
	if err := os.Mkdir(filepath.Join(data, bucket), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--port", endpoint, "--cert", files.ServerCert, "--key", files.ServerKey,
		"--health", "/health", "posix", data)
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+accessKey, "ROOT_SECRET_KEY="+secretKey)
	cmd.Stdout, cmd.Stderr = t.Output(), t.Output()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start versitygw: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	pem, err := os.ReadFile(files.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	Eventually(t, 20*time.Second, func() error {
		resp, err := hc.Get("https://" + endpoint + "/health")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("health: %s", resp.Status)
		}
		return nil
	})
	return endpoint, accessKey, secretKey, bucket
}
