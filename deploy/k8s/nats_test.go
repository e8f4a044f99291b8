package k8s

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/capstream/capstream/natsauth"
	"github.com/capstream/capstream/schemas"
)

var update = flag.Bool("update", false, "rewrite nats/auth.conf from schemas")

// authConfPath is the nats-server authorization block for the identities
// of this deployment.
const authConfPath = "nats/auth.conf"

// natsUser is one user of auth.conf: an identity, and the variable of the
// server's environment that holds its password. The variable has the name
// of the component's own override, so one name means one password on both
// sides. The callout's user (callout) has no allow lists but a subscription
// to the authorization requests and allow_responses.
type natsUser struct {
	id          schemas.Identity
	passwordVar string
	callout     bool
}

// issuerVar is the variable of the server's environment that holds the
// public key of the callout's issuer account (nats auth nkey show).
const issuerVar = "CAPSTREAM_NATSAUTH_ISSUER"

func natsUsers() []natsUser {
	return []natsUser{
		{id: schemas.RouterIdentity(), passwordVar: "CAPSTREAM_ROUTER_NATS_PASSWORD"},
		{id: schemas.PcapSinkIdentity(), passwordVar: "CAPSTREAM_SINK_PCAP_NATS_PASSWORD"},
		{id: schemas.FlowSinkIdentity(), passwordVar: "CAPSTREAM_SINK_FLOWS_NATS_PASSWORD"},
		{id: schemas.MonitorIdentity(), passwordVar: "CAPSTREAM_MONITOR_NATS_PASSWORD"},
		{id: schemas.Identity{User: natsauth.User, Subscribe: natsauth.SubscribeAllow()}, passwordVar: "CAPSTREAM_NATSAUTH_NATS_PASSWORD", callout: true},
	}
}

// authConf renders the authorization block: static users with allow-lists
// only (the server denies everything else), passwords as $VARIABLE
// references that nats-server resolves from its environment at start, and
// the auth callout that every other connection (the producers') goes
// through.
func authConf() []byte {
	var b bytes.Buffer
	b.WriteString(`# nats-server authorization for capstream's identities (DESIGN.md
# "Identities on the bus"). GENERATED from schemas by deploy/k8s/nats_test.go;
# do not edit, run: go test ./deploy/k8s/ -run TestNATSAuthConf -update
#
# Include it from the server's configuration (include ./auth.conf) and give
# the server process one environment variable per static user, holding
# that user's password: the same value as the nats-password key of the
# component's Secret (CAPSTREAM_MONITOR_NATS_PASSWORD is yours, for the
# nats CLI), and CAPSTREAM_NATSAUTH_ISSUER, the public key (A...) of the
# account seed in capstream-nats-auth-credentials. No secret is in this
# file. nats-server stops at start if a variable is unset. It reads a
# variable's value as a configuration value, so a password must not be
# only digits or a word like true: use openssl rand -hex 24
# (deploy/k8s/README.md).
#
# The producers are no static user: every connection that is not one of
# auth_users goes to the auth callout (capstream nats-auth), which grants a
# producer pod's token its own node's permissions and refuses anything
# else, a client without credentials included.
#
# Every user is in the global account, where JetStream must be enabled; no
# user may publish or subscribe beyond its lists.
authorization {
  users = [
`)
	quoted := func(list []string) string {
		q := make([]string, len(list))
		for i, s := range list {
			q[i] = fmt.Sprintf("%q", s)
		}
		return "[\n          " + strings.Join(q, ",\n          ") + "\n        ]"
	}
	var authUsers []string
	for _, u := range natsUsers() {
		authUsers = append(authUsers, fmt.Sprintf("%q", u.id.User))
		fmt.Fprintf(&b, "    {\n      user: %q\n      password: $%s\n      permissions: {\n", u.id.User, u.passwordVar)
		if u.callout {
			// Nothing to publish but one answer per request received.
			fmt.Fprintf(&b, "        subscribe: { allow: %s }\n", quoted(u.id.Subscribe))
			fmt.Fprintf(&b, "        allow_responses: { max: 1, expires: %q }\n", natsauth.ResponseTTL.String())
		} else {
			fmt.Fprintf(&b, "        publish: { allow: %s }\n", quoted(u.id.Publish))
			fmt.Fprintf(&b, "        subscribe: { allow: %s }\n", quoted(u.id.Subscribe))
		}
		b.WriteString("      }\n    }\n")
	}
	b.WriteString("  ]\n")
	fmt.Fprintf(&b, "  auth_callout {\n    issuer: $%s\n    auth_users: [ %s ]\n  }\n", issuerVar, strings.Join(authUsers, ", "))
	b.WriteString("}\n")
	return b.Bytes()
}

// TestNATSAuthConf keeps nats/auth.conf equal to what schemas says, and
// each component's NATS password variable the one auth.conf expects.
func TestNATSAuthConf(t *testing.T) {
	want := authConf()
	if *update {
		if err := os.WriteFile(authConfPath, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(authConfPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from schemas' identities: go test ./deploy/k8s/ -run TestNATSAuthConf -update", authConfPath)
	}
	byUser := map[string]string{}
	for _, u := range natsUsers() {
		byUser[u.id.User] = u.passwordVar
	}
	for _, c := range components {
		if c.noNATS {
			if _, ok := c.secretKeys[c.envPrefix+"_NATS_PASSWORD"]; ok {
				t.Errorf("%s: a NATS password, but it never connects to NATS", c.name)
			}
			continue
		}
		v := c.envPrefix + "_NATS_PASSWORD"
		if c.name == "producer" {
			// No static user: the callout's.
			if _, ok := byUser[c.identity.User]; ok || len(c.secretKeys) != 0 {
				t.Errorf("producer: a static user %s or Secret keys %v", c.identity.User, c.secretKeys)
			}
			continue
		}
		if byUser[c.identity.User] != v || c.secretKeys[v] != "nats-password" {
			t.Errorf("%s: auth.conf reads the password of %s from $%s; the pod sets %s from nats-password (%v)", c.name, c.identity.User, byUser[c.identity.User], v, c.secretKeys)
		}
	}
}
