package natsauth

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nkeys"
)

func jwtOf(payload string) string {
	return "eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString([]byte(payload)) + ".c2ln"
}

func TestTokenExpiry(t *testing.T) {
	valid := map[string]int64{
		`{"exp":1796221536}`:                        1796221536,
		`{"aud":["capstream-nats"],"exp":1,"x":{}}`: 1,
	}
	for payload, want := range valid {
		tok := jwtOf(payload)
		if !jwtShaped(tok) {
			t.Errorf("%s: not JWT-shaped", payload)
		}
		got, err := tokenExpiry(tok)
		if err != nil || !got.Equal(time.Unix(want, 0)) {
			t.Errorf("%s: %v, %v; want %d", payload, got, err, want)
		}
	}
	invalid := []string{
		jwtOf(`{}`), jwtOf(`{"exp":null}`), jwtOf(`{"exp":"1"}`), jwtOf(`{"exp":1.5}`), jwtOf(`{"exp":-3}`),
		jwtOf(`{"exp":0}`), jwtOf(`{"exp":99999999999999999999999}`), jwtOf(`not json`),
		"a.b", "a.b.c.d", "a.!!!.c", "",
	}
	for _, tok := range invalid {
		if _, err := tokenExpiry(tok); err == nil {
			t.Errorf("%q: an expiry, want an error", tok)
		}
	}
	for _, tok := range []string{"a.b", "a b.c.d", "a.b.c\n", "x." + strings.Repeat("a", maxTokenBytes) + ".y", "a.b.c\x00"} {
		if jwtShaped(tok) {
			t.Errorf("%q: JWT-shaped", tok)
		}
	}
}

func FuzzTokenExpiry(f *testing.F) {
	f.Add(jwtOf(`{"exp":1796221536}`))
	f.Add(jwtOf(`{"exp":1.5e300}`))
	f.Add("a..b")
	f.Fuzz(func(t *testing.T, tok string) {
		if jwtShaped(tok) {
			_, _ = tokenExpiry(tok)
		}
	})
}

func TestConfigValidate(t *testing.T) {
	account, _ := nkeys.CreateAccount()
	aseed, _ := account.Seed()
	user, _ := nkeys.CreateUser()
	useed, _ := user.Seed()
	curve, _ := nkeys.CreateCurveKeys()
	cseed, _ := curve.Seed()
	ok := DefaultConfig()
	ok.IssuerSeed, ok.XKeySeed = string(aseed), string(cseed)
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	cases := map[string]func(*Config){
		"no issuer":         func(c *Config) { c.IssuerSeed = "" },
		"user seed":         func(c *Config) { c.IssuerSeed = string(useed) },
		"garbage seed":      func(c *Config) { c.IssuerSeed = "SAxyz" },
		"account as xkey":   func(c *Config) { c.XKeySeed = string(aseed) },
		"no audience":       func(c *Config) { c.Audience = "" },
		"no accounts":       func(c *Config) { c.ServiceAccounts = nil },
		"not an SA":         func(c *Config) { c.ServiceAccounts = []string{"system:node:n1"} },
		"short ttl":         func(c *Config) { c.MaxTTL = time.Millisecond },
		"wildcard account":  func(c *Config) { c.Account = "*" },
		"no workers":        func(c *Config) { c.Workers = 0 },
		"zero review":       func(c *Config) { c.ReviewTimeout = 0 },
		"queue with spaces": func(c *Config) { c.QueueGroup = "a b" },
	}
	for name, mutate := range cases {
		c := ok
		c.ServiceAccounts = append([]string(nil), ok.ServiceAccounts...)
		mutate(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: valid, want an error", name)
		}
	}
}
