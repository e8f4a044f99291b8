package access

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestCheckKey(t *testing.T) {
	valid := []string{
		"node-a/web-1_cali0123456789a/20261127T100000.000000000Z-1.pcap",
		"n/p_i~0123456789abcdef/x.pcap",
		"x.pcap",
	}
	invalid := []string{
		"", "/x.pcap", "../x.pcap", "a/../x.pcap", "a/./x.pcap", "a//x.pcap", "a/x.txt", "a/x.pcap/",
		"a\\..\\x.pcap", "a/x\x00.pcap", "a/x .pcap", "a/%2e%2e/x.pcap", strings.Repeat("a/", 8) + "x.pcap",
		strings.Repeat("a", 1100) + ".pcap",
	}
	for _, k := range valid {
		if err := checkKey(k); err != nil {
			t.Errorf("checkKey(%q) = %v, want nil", k, err)
		}
	}
	for _, k := range invalid {
		if err := checkKey(k); err == nil {
			t.Errorf("checkKey(%q) = nil, want an error", k)
		}
	}
}

func TestBearerToken(t *testing.T) {
	cases := map[string]struct {
		headers []string
		want    string
	}{
		"bearer":       {[]string{"Bearer abc.def"}, "abc.def"},
		"lower case":   {[]string{"bearer abc"}, "abc"},
		"none":         {nil, ""},
		"basic":        {[]string{"Basic dXNlcjpwYXNz"}, ""},
		"empty":        {[]string{"Bearer "}, ""},
		"two headers":  {[]string{"Bearer a", "Bearer b"}, ""},
		"control byte": {[]string{"Bearer a\x01b"}, ""},
		"too long":     {[]string{"Bearer " + strings.Repeat("a", maxTokenBytes+1)}, ""},
	}
	for name, tc := range cases {
		r, _ := http.NewRequest("GET", "/", nil)
		for _, h := range tc.headers {
			r.Header.Add("Authorization", h)
		}
		if got := bearerToken(r); got != tc.want {
			t.Errorf("%s: bearerToken = %q, want %q", name, got, tc.want)
		}
	}
}

func TestConfigTLSRule(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "access.plaintext") {
		t.Errorf("no certificate, no plaintext: %v, want a refusal naming access.plaintext", err)
	}
	c.Plaintext = true
	if err := c.Validate(); err != nil || len(c.Warnings()) != 1 {
		t.Errorf("plaintext: %v, warnings %q; want accepted with a warning", err, c.Warnings())
	}
	c.CertFile = "cert.pem"
	if err := c.Validate(); err == nil {
		t.Error("plaintext with half a certificate accepted")
	}
}

func TestReviewCacheBounded(t *testing.T) {
	now := time.Unix(0, 0)
	c := newReviewCache(64, 10*time.Second)
	c.now = func() time.Time { return now }
	for i := range 10000 {
		c.put(reviewKey("token", string(rune(i))), reviewEntry{})
		if c.len() > 64 {
			t.Fatalf("cache holds %d entries, bound 64", c.len())
		}
	}
	k := reviewKey("t")
	c.put(k, reviewEntry{})
	if _, ok := c.get(k); !ok {
		t.Error("fresh entry missing")
	}
	now = now.Add(10 * time.Second)
	if _, ok := c.get(k); ok {
		t.Error("entry served after its TTL")
	}
	if reviewKey("a", "bc") == reviewKey("ab", "c") {
		t.Error("review keys collide across parts")
	}
}
