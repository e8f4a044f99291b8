package pipeline

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/capstream/capstream/internal/clients"
	"github.com/capstream/capstream/schemas"
)

// Credentials are the users an embedded server accepts: one per identity
// (schemas.Identity), each with a random password made at start and the
// identity's permissions, so every component of the pipeline connects as
// itself and a client without credentials is refused.
type Credentials struct {
	ids       map[string]schemas.Identity
	passwords map[string]string
}

// NewCredentials makes a password for each identity.
func NewCredentials(ids ...schemas.Identity) (*Credentials, error) {
	c := &Credentials{ids: map[string]schemas.Identity{}, passwords: map[string]string{}}
	for _, id := range ids {
		var b [18]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("nats credentials: %w", err)
		}
		c.ids[id.User], c.passwords[id.User] = id, hex.EncodeToString(b[:])
	}
	return c, nil
}

// pipelineIdentities are the identities of a pipeline with producers on
// nodes: the router (which the harnesses also use to publish commands and
// set up the streams), both sinks, one producer per node and the monitor.
func pipelineIdentities(nodes []string) ([]schemas.Identity, error) {
	ids := []schemas.Identity{schemas.RouterIdentity(), schemas.PcapSinkIdentity(), schemas.FlowSinkIdentity(), schemas.MonitorIdentity()}
	for _, n := range nodes {
		id, err := schemas.ProducerIdentity(n)
		if err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// users are the server's users.
func (c *Credentials) users() []*server.User {
	var out []*server.User
	for user, id := range c.ids {
		out = append(out, &server.User{
			Username: user,
			Password: c.passwords[user],
			Permissions: &server.Permissions{
				Publish:   &server.SubjectPermission{Allow: id.Publish},
				Subscribe: &server.SubjectPermission{Allow: id.Subscribe},
			},
		})
	}
	return out
}

// Client is base (the server's address and TLS) logged in as the identity
// user: its name, password and inbox prefix.
func (c *Credentials) Client(base clients.NATSConfig, user string) (clients.NATSConfig, error) {
	id, ok := c.ids[user]
	if !ok {
		return clients.NATSConfig{}, fmt.Errorf("nats credentials: no user %s", user)
	}
	base.Name, base.User, base.Password, base.InboxPrefix = user, user, c.passwords[user], id.InboxPrefix
	return base, nil
}
