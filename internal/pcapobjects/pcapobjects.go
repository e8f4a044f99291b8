// Package pcapobjects is the pcap sink's objects as their readers see
// them: the user metadata the sink writes on each object, and one way to
// list a directory of them with that metadata, oldest first. The access
// API and the CLI's direct mode list through it.
package pcapobjects

import (
	"context"
	"errors"
	"sort"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
)

// User metadata keys the pcap sink writes. minio-go sends them as
// X-Amz-Meta-*; servers return them canonicalized, which is how they are
// read back (case-insensitively).
const (
	MetaNamespace = "Capstream-Namespace"
	MetaCapture   = "Capstream-Capture"
	MetaUID       = "Capstream-Capture-Uid"
	MetaNode      = "Capstream-Node"
	MetaPod       = "Capstream-Pod"
	MetaInterface = "Capstream-Interface"
	MetaFirstTime = "Capstream-First-Time"
	MetaLastTime  = "Capstream-Last-Time"
	MetaPackets   = "Capstream-Packets"
	MetaFirstSeq  = "Capstream-First-Seq"
	MetaLastSeq   = "Capstream-Last-Seq"
	MetaProducer  = "Capstream-Producer"
	MetaBatches   = "Capstream-Batches"
	MetaSHA256    = "Capstream-Sha256"
	MetaLinkType  = "Capstream-Link-Type"
)

// Object is one completed pcap object.
type Object struct {
	// Key is the object's key (List), or relative to the directory it was
	// listed from where a caller says so.
	Key       string    `json:"key"`
	Size      int64     `json:"size"`
	First     time.Time `json:"first,omitzero"`
	Last      time.Time `json:"last,omitzero"`
	SHA256    string    `json:"sha256,omitempty"`
	Node      string    `json:"node,omitempty"`
	Pod       string    `json:"pod,omitempty"`
	Interface string    `json:"interface,omitempty"`
}

// FromInfo reads an object's metadata from what StatObject returned.
// Times that do not parse stay zero: such an object is kept by every
// time filter rather than hidden.
func FromInfo(key string, st minio.ObjectInfo) Object {
	meta := make(map[string]string, len(st.UserMetadata))
	for k, v := range st.UserMetadata {
		meta[strings.ToLower(k)] = v
	}
	get := func(k string) string { return meta[strings.ToLower(k)] }
	o := Object{Key: key, Size: st.Size, SHA256: get(MetaSHA256), Node: get(MetaNode), Pod: get(MetaPod), Interface: get(MetaInterface)}
	o.First, _ = time.Parse(time.RFC3339Nano, get(MetaFirstTime))
	o.Last, _ = time.Parse(time.RFC3339Nano, get(MetaLastTime))
	return o
}

// ErrTooMany is List's error when more than its max objects pass.
var ErrTooMany = errors.New("too many objects")

// Filter says which objects List keeps.
type Filter struct {
	// Since and Until keep the objects that overlap [Since, Until] when
	// either is set.
	Since, Until time.Time
	// Keep, when set, says whether a .pcap key is listed at all, before
	// its metadata is read.
	Keep func(key string) bool
	// Max, when positive, bounds the objects kept: one more is ErrTooMany.
	Max int
}

// List lists the .pcap objects under prefix that f keeps, with their
// metadata (one StatObject each), oldest first (then by key). S3 errors
// are returned as they came, for the caller to classify.
func List(ctx context.Context, cl *minio.Client, bucket, prefix string, f Filter) ([]Object, error) {
	var objs []Object
	for info := range cl.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if info.Err != nil {
			return nil, info.Err
		}
		if !strings.HasSuffix(info.Key, ".pcap") || f.Keep != nil && !f.Keep(info.Key) {
			continue
		}
		if f.Max > 0 && len(objs) == f.Max {
			return nil, ErrTooMany
		}
		st, err := cl.StatObject(ctx, bucket, info.Key, minio.StatObjectOptions{})
		if err != nil {
			return nil, err
		}
		o := FromInfo(info.Key, st)
		if !f.Since.IsZero() && !o.Last.IsZero() && o.Last.Before(f.Since) {
			continue
		}
		if !f.Until.IsZero() && !o.First.IsZero() && o.First.After(f.Until) {
			continue
		}
		objs = append(objs, o)
	}
	sort.Slice(objs, func(i, j int) bool {
		if !objs[i].First.Equal(objs[j].First) {
			return objs[i].First.Before(objs[j].First)
		}
		return objs[i].Key < objs[j].Key
	})
	return objs, nil
}
