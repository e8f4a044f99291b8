package natsauth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/capstream/capstream/schemas"
)

// reason is why a request was refused: the label of
// capstream_natsauth_refused_total.
type reason string

const (
	// reasonMalformed: not a server's signed, current authorization
	// request, or not readable with our xkey. It cannot be answered.
	reasonMalformed reason = "malformed_request"
	// reasonEncryption: a plain request to a callout that expects
	// encryption (the server's xkey is not set).
	reasonEncryption reason = "encryption"
	// reasonNoToken: the client sent no token (a user and password, or
	// nothing).
	reasonNoToken reason = "no_token"
	// reasonMalformedToken: not shaped like a JWT; never sent to the API
	// server.
	reasonMalformedToken reason = "malformed_token"
	// reasonReviewError: the TokenReview could not be made.
	reasonReviewError reason = "review_error"
	// reasonRejected: the API server does not authenticate the token for
	// our audience (garbage, expired, another audience, its pod deleted).
	reasonRejected reason = "rejected"
	// reasonServiceAccount: a valid token of a user that is not one of
	// the producers' service accounts.
	reasonServiceAccount reason = "service_account"
	// reasonNoNode: the token is not bound to a pod on a node.
	reasonNoNode reason = "no_node"
	// reasonExpiry: the token has no expiry, or too little time left.
	reasonExpiry reason = "expiry"
	// reasonInternal: a bug; the request panicked or a JWT could not be
	// made.
	reasonInternal reason = "internal"
)

var reasons = []reason{reasonMalformed, reasonEncryption, reasonNoToken, reasonMalformedToken, reasonReviewError,
	reasonRejected, reasonServiceAccount, reasonNoNode, reasonExpiry, reasonInternal}

// refusal is a refused request: the reason, and what the server is told
// (it logs it). Neither holds the token.
type refusal struct {
	reason reason
	msg    string
}

func (r *refusal) Error() string { return r.msg }

func refuse(r reason, format string, args ...any) *refusal {
	return &refusal{reason: r, msg: fmt.Sprintf(format, args...)}
}

// Extra keys of a pod-bound service-account token's TokenReview.
const (
	extraNodeName = "authentication.kubernetes.io/node-name"
	extraPodName  = "authentication.kubernetes.io/pod-name"
)

// maxTokenBytes bounds a token: a service-account JWT is a few KiB.
const maxTokenBytes = 16 << 10

// minLifetime is the least time a token must have left: a connection
// that would expire at once is refused rather than granted.
const minLifetime = 5 * time.Second

// xkeyHeader names the server's public xkey on an encrypted request.
const xkeyHeader = "Nats-Server-Xkey"

// grant is what a request was given.
type grant struct {
	node, pod, user string
	expires         time.Time
	jwt             string
}

// handle answers one request. A panic is a bug: it is counted and the
// request left unanswered (the server refuses the connection when its
// authorization timeout ends).
func (c *Callout) handle(ctx context.Context, m *nats.Msg) {
	defer func() {
		if p := recover(); p != nil {
			c.refused(refuse(reasonInternal, "panic: %v", p), nil)
		}
	}()
	req, serverXKey, rerr := c.decode(m)
	if rerr != nil && req == nil {
		// Nobody to answer: the request's user and server are unknown.
		c.refused(rerr, nil)
		return
	}
	var g grant
	if rerr == nil {
		g, rerr = c.authorize(ctx, req)
	}
	resp := jwt.NewAuthorizationResponseClaims(req.UserNkey)
	resp.Audience = req.Server.ID
	if rerr != nil {
		c.refused(rerr, req)
		resp.Error = rerr.msg
	} else {
		resp.Jwt = g.jwt
	}
	data, err := c.encodeResponse(resp, serverXKey)
	if err != nil {
		c.refused(refuse(reasonInternal, "encode response: %v", err), req)
		return
	}
	if err := m.Respond(data); err != nil {
		c.log.Warn("answer authorization request", "error", err, "client_host", req.ClientInformation.Host)
		return
	}
	if rerr == nil {
		c.metrics.allowed.Inc()
		c.log.Info("producer identity granted", "node", g.node, "pod", g.pod, "user", g.user,
			"expires", g.expires.UTC().Format(time.RFC3339), "client_host", req.ClientInformation.Host)
	}
}

// decode opens and verifies a request: signed by a server, current, for
// the authorization callout. With a request (and a nil refusal) it can be
// answered; serverXKey is the key to encrypt the answer to, if any.
func (c *Callout) decode(m *nats.Msg) (*jwt.AuthorizationRequestClaims, string, *refusal) {
	data := m.Data
	serverXKey := m.Header.Get(xkeyHeader)
	switch {
	case serverXKey != "" && c.xkey == nil:
		return nil, "", refuse(reasonMalformed, "an encrypted request, and no callout.xkeySeed to read it")
	case serverXKey != "":
		var err error
		if data, err = c.xkey.Open(data, serverXKey); err != nil {
			return nil, "", refuse(reasonMalformed, "decrypt request: %v", err)
		}
	}
	req, err := jwt.DecodeAuthorizationRequestClaims(string(data))
	if err != nil {
		return nil, "", refuse(reasonMalformed, "decode request: %v", err)
	}
	vr := jwt.CreateValidationResults()
	req.Validate(vr)
	if len(vr.Issues) > 0 || req.Audience != "nats-authorization-request" || req.Server.ID == "" {
		return nil, "", refuse(reasonMalformed, "invalid request from server %q: %v", req.Server.Name, vr.Errors())
	}
	if c.xkey != nil && serverXKey == "" {
		return req, "", refuse(reasonEncryption, "the callout expects encrypted requests: set the server's auth_callout xkey")
	}
	return req, serverXKey, nil
}

// authorize reviews the request's token and makes the producer's user
// JWT.
func (c *Callout) authorize(ctx context.Context, req *jwt.AuthorizationRequestClaims) (grant, *refusal) {
	token := req.ConnectOptions.Token
	if token == "" {
		return grant{}, refuse(reasonNoToken, "no token: a producer connects with its pod's service-account token (nats.tokenFile)")
	}
	if !jwtShaped(token) {
		return grant{}, refuse(reasonMalformedToken, "the token is not a JWT")
	}
	user, auds, err := c.review(ctx, token)
	if err != nil {
		return grant{}, err
	}
	if !slices.Contains(auds, c.cfg.Audience) {
		return grant{}, refuse(reasonRejected, "the token review does not confirm audience %s", c.cfg.Audience)
	}
	if !slices.Contains(c.cfg.ServiceAccounts, user.Username) {
		return grant{}, refuse(reasonServiceAccount, "%s is not a producer service account", user.Username)
	}
	nodes, pods := user.Extra[extraNodeName], user.Extra[extraPodName]
	if len(nodes) != 1 || len(pods) != 1 || nodes[0] == "" {
		return grant{}, refuse(reasonNoNode, "the token of %s is not bound to a pod on a node: request it with a projected volume (or a TokenRequest bound to the pod)", user.Username)
	}
	node := nodes[0]
	id, ierr := schemas.ProducerIdentity(node)
	if ierr != nil {
		return grant{}, refuse(reasonNoNode, "node %q: %v", node, ierr)
	}
	now := c.now()
	exp, eerr := tokenExpiry(token)
	if eerr != nil {
		return grant{}, refuse(reasonExpiry, "token of %s: %v", user.Username, eerr)
	}
	if exp.Sub(now) < minLifetime {
		return grant{}, refuse(reasonExpiry, "the token of %s expires in %s", user.Username, exp.Sub(now).Round(time.Second))
	}
	if limit := now.Add(c.cfg.MaxTTL); exp.After(limit) {
		exp = limit
	}
	uc := userClaims(req.UserNkey, id, c.cfg.Account, now, exp)
	signed, err2 := uc.Encode(c.issuer)
	if err2 != nil {
		return grant{}, refuse(reasonInternal, "sign user jwt: %v", err2)
	}
	return grant{node: node, pod: pods[0], user: id.User, expires: exp, jwt: signed}, nil
}

// userClaims is the user JWT of a producer identity: its allow lists,
// standard client connections only, placed in account, issued now and
// expiring at exp.
func userClaims(userNkey string, id schemas.Identity, account string, now, exp time.Time) *jwt.UserClaims {
	uc := jwt.NewUserClaims(userNkey)
	uc.Name = id.User
	uc.Audience = account
	uc.IssuedAt = now.Unix()
	uc.Expires = exp.Unix()
	uc.Pub.Allow.Add(id.Publish...)
	uc.Sub.Allow.Add(id.Subscribe...)
	uc.AllowedConnectionTypes.Add(jwt.ConnectionTypeStandard)
	return uc
}

// review asks the API server about the token, for the callout's audience
// only.
func (c *Callout) review(ctx context.Context, token string) (authnv1.UserInfo, []string, *refusal) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ReviewTimeout)
	defer cancel()
	start := time.Now()
	tr, err := c.deps.Kube.AuthenticationV1().TokenReviews().Create(ctx,
		&authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token, Audiences: []string{c.cfg.Audience}}}, metav1.CreateOptions{})
	c.metrics.review.Observe(time.Since(start).Seconds())
	if err != nil {
		// The API server's errors (forbidden, timeout) never echo the
		// request body.
		return authnv1.UserInfo{}, nil, refuse(reasonReviewError, "token review: %v", err)
	}
	if !tr.Status.Authenticated || tr.Status.User.Username == "" {
		return authnv1.UserInfo{}, nil, refuse(reasonRejected, "the API server does not accept the token for audience %s", c.cfg.Audience)
	}
	return tr.Status.User, tr.Status.Audiences, nil
}

// encodeResponse signs the answer and, for an encrypted request, seals it
// to the server's xkey.
func (c *Callout) encodeResponse(resp *jwt.AuthorizationResponseClaims, serverXKey string) ([]byte, error) {
	signed, err := resp.Encode(c.issuer)
	if err != nil {
		return nil, err
	}
	if serverXKey == "" {
		return []byte(signed), nil
	}
	return c.xkey.Seal([]byte(signed), serverXKey)
}

// refused counts a refusal and logs it unless its reason was logged less
// than logEvery ago.
func (c *Callout) refused(r *refusal, req *jwt.AuthorizationRequestClaims) {
	c.metrics.refused.WithLabelValues(string(r.reason)).Inc()
	now := c.now()
	c.mu.Lock()
	st, seen := c.logged[r.reason]
	if seen && now.Sub(st.at) < logEvery {
		st.suppressed++
		c.logged[r.reason] = st
		c.mu.Unlock()
		return
	}
	c.logged[r.reason] = logState{at: now}
	c.mu.Unlock()
	attrs := []any{"reason", string(r.reason), "error", r.msg, "not_logged_since", st.suppressed}
	if req != nil {
		attrs = append(attrs, "client_host", req.ClientInformation.Host, "client_name", req.ClientInformation.Name, "server", req.Server.Name)
	}
	level := slog.LevelWarn
	if r.reason == reasonInternal {
		level = slog.LevelError
	}
	c.log.Log(context.Background(), level, "nats connection refused", attrs...)
}

// jwtShaped reports whether a token looks like a JWT: three base64url
// segments, printable, bounded.
func jwtShaped(token string) bool {
	if len(token) > maxTokenBytes || strings.Count(token, ".") != 2 {
		return false
	}
	for i := 0; i < len(token); i++ {
		b := token[i]
		if !(b >= 'A' && b <= 'Z' || b >= 'a' && b <= 'z' || b >= '0' && b <= '9' || b == '-' || b == '_' || b == '.') {
			return false
		}
	}
	return true
}

// tokenExpiry reads the exp claim of a JWT the API server has just
// accepted (so its signature is verified): the review itself does not
// say when the token ends.
func tokenExpiry(token string) (time.Time, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}, fmt.Errorf("not a JWT")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}, fmt.Errorf("jwt payload: %w", err)
	}
	var claims struct {
		Exp *int64 `json:"exp"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return time.Time{}, fmt.Errorf("jwt payload: %w", err)
	}
	if claims.Exp == nil {
		return time.Time{}, fmt.Errorf("no expiry (a legacy secret token?): use a projected token with expirationSeconds")
	}
	exp := *claims.Exp
	if exp <= 0 {
		return time.Time{}, fmt.Errorf("exp %d: not positive", exp)
	}
	return time.Unix(exp, 0), nil
}
