package access

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/capstream/capstream/internal/pcapmerge"
	"github.com/capstream/capstream/internal/pcapobjects"
	"github.com/capstream/capstream/schemas"
)

// packetCaptures is the PacketCapture resource. The API does not import
// schemas/v3 for one GroupVersionResource.
var packetCaptures = schema.GroupVersionResource{Group: "projectcalico.org", Version: "v3", Resource: "packetcaptures"}

// SHA256Header carries an object's SHA-256 (hex, as the sink recorded
// it) on a download.
const SHA256Header = pcapobjects.MetaSHA256

// Object is one completed pcap object of a capture; in the API's answers
// its Key is relative to the capture UID's directory:
// <node>/<pod>_<iface>/<start>-<seq>.pcap.
type Object = pcapobjects.Object

// FileList is the answer of GET files.
type FileList struct {
	Namespace string   `json:"namespace"`
	Name      string   `json:"name"`
	UID       string   `json:"uid"`
	Objects   []Object `json:"objects"`
}

// Deleted is the answer of DELETE files.
type Deleted struct {
	UID     string `json:"uid"`
	Deleted int    `json:"deleted"`
}

// UIDObjects is one capture UID with objects under a name.
type UIDObjects struct {
	UID     string `json:"uid"`
	Objects int    `json:"objects"`
}

// Bounds of a relative object key.
const (
	maxKeyBytes    = 1024
	maxKeySegments = 8
)

// checkKey accepts a key relative to a capture UID's directory only in
// the form the sink writes: segments of letters, digits and . _ - ~, none
// empty, "." or "..", ending in .pcap. So it cannot leave the directory
// whatever the client sends (the mux has decoded %2F already).
func checkKey(rel string) error {
	if rel == "" || len(rel) > maxKeyBytes || !strings.HasSuffix(rel, ".pcap") || path.Clean(rel) != rel || strings.HasPrefix(rel, "/") {
		return fail(http.StatusBadRequest, "invalid object key %q: want <node>/<pod>_<iface>/<file>.pcap, at most %d bytes", clip(rel), maxKeyBytes)
	}
	segs := strings.Split(rel, "/")
	if len(segs) > maxKeySegments {
		return fail(http.StatusBadRequest, "invalid object key %q: more than %d segments", clip(rel), maxKeySegments)
	}
	for _, seg := range segs {
		if seg == "" || seg == "." || seg == ".." {
			return fail(http.StatusBadRequest, "invalid object key %q: empty, '.' or '..' segment", clip(rel))
		}
		for i := 0; i < len(seg); i++ {
			c := seg[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-' || c == '~') {
				return fail(http.StatusBadRequest, "invalid object key %q: byte %q is not allowed", clip(rel), c)
			}
		}
	}
	return nil
}

// dir is the key prefix of one capture UID's objects.
func (s *Server) dir(namespace, name, uid string) string {
	return schemas.CaptureDir(s.cfg.Prefix, namespace, name, uid)
}

// resolveUID picks the capture UID a request acts on: ?uid= when given;
// otherwise the live PacketCapture's, read with the API's own identity;
// otherwise, with no such capture, the one UID that has objects under the
// name. Several is 409 listing them.
func (s *Server) resolveUID(q *request) (string, error) {
	if v := q.r.URL.Query()["uid"]; len(v) > 0 {
		if len(v) != 1 || !pcapobjects.ValidUID(v[0]) {
			return "", fail(http.StatusBadRequest, "invalid uid %q: want 1 to %d letters, digits or '-'", clip(strings.Join(v, ",")), pcapobjects.MaxUIDLength)
		}
		return v[0], nil
	}
	ctx, cancel := context.WithTimeout(q.r.Context(), s.cfg.ReviewTimeout)
	defer cancel()
	u, err := s.deps.Dynamic.Resource(packetCaptures).Namespace(q.namespace).Get(ctx, q.name, metav1.GetOptions{})
	switch {
	case err == nil && pcapobjects.ValidUID(string(u.GetUID())):
		return string(u.GetUID()), nil
	case err == nil:
		return "", fail(http.StatusConflict, "PacketCapture %s/%s has an unusable uid: pass uid", q.namespace, q.name)
	case !apierrors.IsNotFound(err):
		s.log.Warn("read packetcapture", "namespace", q.namespace, "name", q.name, "error", err)
		return "", fail(http.StatusServiceUnavailable, "cannot read PacketCapture %s/%s from the Kubernetes API server", q.namespace, q.name)
	}
	uids, err := s.listUIDs(q.r.Context(), q.namespace, q.name)
	if err != nil {
		return "", err
	}
	switch len(uids) {
	case 0:
		return "", fail(http.StatusNotFound, "no PacketCapture %s/%s and no objects under the name", q.namespace, q.name)
	case 1:
		return uids[0].UID, nil
	}
	e := fail(http.StatusConflict, "no PacketCapture %s/%s, and objects of %d captures with this name: pass uid", q.namespace, q.name, len(uids))
	e.uids = uids
	return "", e
}

// maxListedUIDs bounds the UIDs a 409 lists (each costs a listing).
const maxListedUIDs = 20

// listUIDs lists the UIDs with a directory under the capture's name and
// how many objects each holds (the first maxListedUIDs).
func (s *Server) listUIDs(ctx context.Context, namespace, name string) ([]UIDObjects, error) {
	dir := s.dir(namespace, name, "")
	uids, err := pcapobjects.UIDs(ctx, s.deps.S3, s.deps.Bucket, dir)
	if err != nil {
		return nil, s.s3Error(err)
	}
	var out []UIDObjects
	for i, uid := range uids {
		u := UIDObjects{UID: uid}
		if i < maxListedUIDs {
			span, err := pcapobjects.Count(ctx, s.deps.S3, s.deps.Bucket, dir+uid+"/")
			if err != nil {
				return nil, s.s3Error(err)
			}
			u.Objects = span.Objects
		}
		out = append(out, u)
	}
	return out, nil
}

// s3Error is the client's view of an S3 failure; the details are logged.
func (s *Server) s3Error(err error) error {
	if minio.ToErrorResponse(err).Code == "NoSuchKey" {
		return fail(http.StatusNotFound, "no such object")
	}
	s.log.Warn("s3", "error", err)
	return fail(http.StatusBadGateway, "the object store failed")
}

// timeParam reads an RFC 3339 time parameter; absent is zero.
func timeParam(q *request, name string) (time.Time, error) {
	v := q.r.URL.Query().Get(name)
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, fail(http.StatusBadRequest, "invalid %s %q: want an RFC 3339 time", name, clip(v))
	}
	return t, nil
}

// listObjects lists one capture UID's completed objects, oldest first,
// keeping those that overlap [since, until] when either is set. More
// than MaxObjects is 413.
func (s *Server) listObjects(ctx context.Context, dir, node string, since, until time.Time) ([]Object, error) {
	prefix := dir
	if node != "" {
		prefix += schemas.KeySegment(node) + "/"
	}
	objs, err := pcapobjects.List(ctx, s.deps.S3, s.deps.Bucket, prefix, pcapobjects.Filter{
		Since: since, Until: until, Max: s.cfg.MaxObjects,
		Keep: func(key string) bool { return checkKey(strings.TrimPrefix(key, dir)) == nil },
	})
	switch {
	case errors.Is(err, pcapobjects.ErrTooMany):
		return nil, fail(http.StatusRequestEntityTooLarge, "more than %d objects: narrow the request with since and until", s.cfg.MaxObjects)
	case err != nil:
		return nil, s.s3Error(err)
	}
	for i := range objs {
		objs[i].Key = strings.TrimPrefix(objs[i].Key, dir)
	}
	return objs, nil
}

// timeWindow reads the since and until parameters.
func timeWindow(q *request) (since, until time.Time, err error) {
	if since, err = timeParam(q, "since"); err != nil {
		return time.Time{}, time.Time{}, err
	}
	if until, err = timeParam(q, "until"); err != nil {
		return time.Time{}, time.Time{}, err
	}
	return since, until, nil
}

// listFiles serves GET files[?uid=&since=&until=&node=].
func (s *Server) listFiles(q *request) error {
	since, until, err := timeWindow(q)
	if err != nil {
		return err
	}
	node := q.r.URL.Query().Get("node")
	if node != "" {
		if err := checkNames("a", node); err != nil {
			return fail(http.StatusBadRequest, "invalid node %q", clip(node))
		}
	}
	uid, err := s.resolveUID(q)
	if err != nil {
		return err
	}
	objs, err := s.listObjects(q.r.Context(), s.dir(q.namespace, q.name, uid), node, since, until)
	if err != nil {
		return err
	}
	if objs == nil {
		objs = []Object{}
	}
	writeJSON(q.w, http.StatusOK, FileList{Namespace: q.namespace, Name: q.name, UID: uid, Objects: objs})
	return nil
}

// copyBuffer is the size of the one buffer a stream goes through.
const copyBuffer = 64 << 10

// getFile serves GET files/{key}: one object, streamed.
func (s *Server) getFile(q *request) error {
	rel := q.r.PathValue("key")
	if err := checkKey(rel); err != nil {
		return err
	}
	uid, err := s.resolveUID(q)
	if err != nil {
		return err
	}
	key := s.dir(q.namespace, q.name, uid) + rel
	ctx := q.r.Context()
	st, err := s.deps.S3.StatObject(ctx, s.deps.Bucket, key, minio.StatObjectOptions{})
	if err != nil {
		return s.s3Error(err)
	}
	obj, err := s.deps.S3.GetObject(ctx, s.deps.Bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return s.s3Error(err)
	}
	defer obj.Close()
	o := pcapobjects.FromInfo(rel, st)
	h := q.w.Header()
	h.Set("Content-Type", "application/vnd.tcpdump.pcap")
	h.Set("Content-Length", strconv.FormatInt(st.Size, 10))
	h.Set("Content-Disposition", `attachment; filename="`+path.Base(rel)+`"`)
	if o.SHA256 != "" {
		h.Set(SHA256Header, o.SHA256)
	}
	h.Set("Capstream-Uid", uid)
	q.w.WriteHeader(http.StatusOK)
	n, err := io.CopyBuffer(q.w, io.LimitReader(obj, st.Size), make([]byte, copyBuffer))
	if err == nil && n != st.Size {
		err = fmt.Errorf("object %s: %d bytes of %d", key, n, st.Size)
	}
	if err != nil {
		return fmt.Errorf("stream %s: %w", key, err)
	}
	return nil
}

// merged serves GET merged[?uid=&since=&until=]: every object of the
// window as one time-ordered pcap, streamed. It reads at most
// MaxMergeObjects objects (one S3 stream each); a window with more is
// 413, so memory is bounded by that many streams' buffers.
func (s *Server) merged(q *request) error {
	since, until, err := timeWindow(q)
	if err != nil {
		return err
	}
	uid, err := s.resolveUID(q)
	if err != nil {
		return err
	}
	ctx := q.r.Context()
	dir := s.dir(q.namespace, q.name, uid)
	objs, err := s.listObjects(ctx, dir, "", since, until)
	if err != nil {
		return err
	}
	if len(objs) == 0 {
		return fail(http.StatusNotFound, "no pcap objects for capture %s/%s (uid %s) in that window", q.namespace, q.name, uid)
	}
	if len(objs) > s.cfg.MaxMergeObjects {
		return fail(http.StatusRequestEntityTooLarge, "%d objects, more than the %d one merge reads: narrow since and until, or download the files and merge them (capstream captured-packets copy --merge)", len(objs), s.cfg.MaxMergeObjects)
	}
	inputs := make([]pcapmerge.Input, 0, len(objs))
	for _, o := range objs {
		obj, err := s.deps.S3.GetObject(ctx, s.deps.Bucket, dir+o.Key, minio.GetObjectOptions{})
		if err != nil {
			return s.s3Error(err)
		}
		defer obj.Close()
		inputs = append(inputs, pcapmerge.Input{Name: o.Key, Reader: obj})
	}
	h := q.w.Header()
	h.Set("Content-Type", "application/vnd.tcpdump.pcap")
	h.Set("Content-Disposition", `attachment; filename="`+schemas.Shorten(q.namespace+"_"+q.name, 250)+`.pcap"`)
	h.Set("Capstream-Uid", uid)
	if _, err := pcapmerge.Merge(q.w, inputs); err != nil {
		if errors.Is(err, pcapmerge.ErrLinkTypeMismatch) && !headerSent(q.w) {
			return fail(http.StatusConflict, "the objects have different link types, which one pcap cannot hold: download them one by one")
		}
		return fmt.Errorf("merge %s: %w", dir, err)
	}
	return nil
}

func headerSent(w http.ResponseWriter) bool {
	sw, ok := w.(*statusWriter)
	return ok && sw.code != 0
}

// cleanFiles serves DELETE files[?uid=]: deletes one capture UID's objects.
func (s *Server) cleanFiles(q *request) error {
	uid, err := s.resolveUID(q)
	if err != nil {
		return err
	}
	prefix := s.dir(q.namespace, q.name, uid)
	found, listErr, err := pcapobjects.Remove(q.r.Context(), s.deps.S3, s.deps.Bucket, prefix)
	if listErr != nil {
		return s.s3Error(listErr)
	}
	if err != nil {
		return s.s3Error(err)
	}
	if found == 0 {
		return fail(http.StatusNotFound, "no pcap objects for capture %s/%s (uid %s)", q.namespace, q.name, uid)
	}
	s.log.Info("cleaned capture objects", "namespace", q.namespace, "capture", q.name, "uid", uid, "objects", found, "user", q.user)
	writeJSON(q.w, http.StatusOK, Deleted{UID: uid, Deleted: found})
	return nil
}
