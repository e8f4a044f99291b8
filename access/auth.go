package access

import (
	"context"
	"crypto/sha256"
	"net/http"
	"strings"
	"sync"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// The verbs of packetcaptures/files, as Calico Enterprise gates them.
const (
	verbGet    = "get"
	verbDelete = "delete"
)

// The resource a SubjectAccessReview asks about.
const (
	resourceGroup       = "projectcalico.org"
	resourceName        = "packetcaptures"
	resourceSubresource = "files"
)

// maxTokenBytes bounds a bearer token: service-account JWTs and OIDC ID
// tokens are a few KiB.
const maxTokenBytes = 16 << 10

// bearerToken is the token of an "Authorization: Bearer" header, or "".
func bearerToken(r *http.Request) string {
	h := r.Header.Values("Authorization")
	if len(h) != 1 {
		return ""
	}
	scheme, token, ok := strings.Cut(h[0], " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return ""
	}
	token = strings.TrimSpace(token)
	if token == "" || len(token) > maxTokenBytes {
		return ""
	}
	for i := 0; i < len(token); i++ {
		if c := token[i]; c <= ' ' || c > '~' {
			return ""
		}
	}
	return token
}

// authenticate returns the token's user, from the cache or a TokenReview.
// No token, a malformed one or a rejected one is 401; a review that
// cannot be made is 503. No message holds the token.
func (s *Server) authenticate(r *http.Request) (authnv1.UserInfo, error) {
	token := bearerToken(r)
	if token == "" {
		return authnv1.UserInfo{}, fail(http.StatusUnauthorized, "no bearer token: send Authorization: Bearer <token> with your Kubernetes credentials")
	}
	key := reviewKey(token, "token")
	if e, ok := s.reviews.get(key); ok {
		s.metrics.cacheHits.WithLabelValues("token").Inc()
		return e.user, nil
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.ReviewTimeout)
	defer cancel()
	tr, err := s.deps.Kube.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
	if err != nil {
		s.metrics.reviews.WithLabelValues("token", "error").Inc()
		s.log.Warn("token review failed", "error", err)
		return authnv1.UserInfo{}, fail(http.StatusServiceUnavailable, "cannot review the token with the Kubernetes API server")
	}
	if !tr.Status.Authenticated || tr.Status.User.Username == "" {
		s.metrics.reviews.WithLabelValues("token", "rejected").Inc()
		return authnv1.UserInfo{}, fail(http.StatusUnauthorized, "the Kubernetes API server does not accept this token")
	}
	s.metrics.reviews.WithLabelValues("token", "allowed").Inc()
	s.reviews.put(key, reviewEntry{user: tr.Status.User})
	return tr.Status.User, nil
}

// authorize asks whether user may verb packetcaptures/files of the
// capture; denied is 403.
func (s *Server) authorize(ctx context.Context, r *http.Request, user authnv1.UserInfo, verb, namespace, name string) error {
	key := reviewKey(bearerToken(r), "access", verb, namespace, name)
	if _, ok := s.reviews.get(key); ok {
		s.metrics.cacheHits.WithLabelValues("access").Inc()
		return nil
	}
	extra := make(map[string]authzv1.ExtraValue, len(user.Extra))
	for k, v := range user.Extra {
		extra[k] = authzv1.ExtraValue(v)
	}
	sar := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
		User: user.Username, Groups: user.Groups, UID: user.UID, Extra: extra,
		ResourceAttributes: &authzv1.ResourceAttributes{
			Namespace: namespace, Verb: verb, Group: resourceGroup, Resource: resourceName, Subresource: resourceSubresource, Name: name,
		},
	}}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ReviewTimeout)
	defer cancel()
	got, err := s.deps.Kube.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
	if err != nil {
		s.metrics.reviews.WithLabelValues("access", "error").Inc()
		s.log.Warn("subject access review failed", "error", err)
		return fail(http.StatusServiceUnavailable, "cannot review access with the Kubernetes API server")
	}
	if !got.Status.Allowed || got.Status.Denied {
		s.metrics.reviews.WithLabelValues("access", "denied").Inc()
		return fail(http.StatusForbidden, "user %q may not %s %s/%s in namespace %q (capture %q)", user.Username, verb, resourceName, resourceSubresource, namespace, name)
	}
	s.metrics.reviews.WithLabelValues("access", "allowed").Inc()
	s.reviews.put(key, reviewEntry{})
	return nil
}

// checkNames refuses what cannot be a PacketCapture's namespace and name
// before they reach a review, a key or a query.
func checkNames(namespace, name string) error {
	if msgs := validation.IsDNS1123Label(namespace); len(msgs) > 0 {
		return fail(http.StatusBadRequest, "invalid namespace %q: %s", clip(namespace), msgs[0])
	}
	if msgs := validation.IsDNS1123Subdomain(name); len(msgs) > 0 {
		return fail(http.StatusBadRequest, "invalid capture name %q: %s", clip(name), msgs[0])
	}
	return nil
}

// clip bounds user text echoed in an error.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// reviewKey is the cache key of a review: a hash of the token and what
// was asked, so the cache never holds a token.
func reviewKey(token string, parts ...string) [32]byte {
	h := sha256.New()
	h.Write([]byte(token))
	for _, p := range parts {
		h.Write([]byte{0})
		h.Write([]byte(p))
	}
	var k [32]byte
	h.Sum(k[:0])
	return k
}

type reviewEntry struct {
	user    authnv1.UserInfo
	expires time.Time
}

// reviewCache holds allowed reviews for ttl, at most size of them. Only
// positive answers are kept: a refusal is asked again next time.
type reviewCache struct {
	mu   sync.Mutex
	size int
	ttl  time.Duration
	m    map[[32]byte]reviewEntry
	now  func() time.Time
}

func newReviewCache(size int, ttl time.Duration) *reviewCache {
	return &reviewCache{size: size, ttl: ttl, m: make(map[[32]byte]reviewEntry), now: time.Now}
}

func (c *reviewCache) get(k [32]byte) (reviewEntry, bool) {
	if c.ttl <= 0 {
		return reviewEntry{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok {
		return reviewEntry{}, false
	}
	if !c.now().Before(e.expires) {
		delete(c.m, k)
		return reviewEntry{}, false
	}
	return e, true
}

func (c *reviewCache) put(k [32]byte, e reviewEntry) {
	if c.ttl <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if len(c.m) >= c.size {
		// Full: drop the expired entries, and if that is not enough, a
		// sixteenth of the rest at once, so a flood of new tokens costs
		// one scan per many inserts.
		for key, old := range c.m {
			if !now.Before(old.expires) {
				delete(c.m, key)
			}
		}
		if len(c.m) >= c.size {
			drop := max(1, c.size/16)
			for key := range c.m {
				if drop == 0 {
					break
				}
				delete(c.m, key)
				drop--
			}
		}
	}
	e.expires = now.Add(c.ttl)
	c.m[k] = e
}

func (c *reviewCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
