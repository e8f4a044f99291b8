package pcapobjects

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
)

// MaxUIDLength is the longest capture UID the pipeline accepts (schemas
// checks batch headers the same way).
const MaxUIDLength = 128

// ValidUID reports whether s can be a capture UID: 1 to MaxUIDLength
// letters, digits and '-', as the pipeline accepts them (Kubernetes makes
// UUIDs).
func ValidUID(s string) bool {
	if s == "" || len(s) > MaxUIDLength {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// UIDs lists the capture UIDs that have a directory under dir (a capture
// name's directory), sorted; segments that cannot be a UID (objects of
// another layout, or put there by someone else) are ignored. S3 errors
// are returned as they came.
func UIDs(ctx context.Context, cl *minio.Client, bucket, dir string) ([]string, error) {
	var uids []string
	for info := range cl.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: dir}) {
		if info.Err != nil {
			return nil, info.Err
		}
		seg, ok := strings.CutSuffix(strings.TrimPrefix(info.Key, dir), "/")
		if ok && ValidUID(seg) {
			uids = append(uids, seg)
		}
	}
	sort.Strings(uids)
	return uids, nil
}

// Span is what the keys under a prefix say without reading an object:
// how many .pcap objects there are and when the first and last of them
// start (zero when no key carries a time).
type Span struct {
	Objects     int
	First, Last time.Time
}

// Count lists the .pcap objects under prefix, by key only. S3 errors are
// returned as they came.
func Count(ctx context.Context, cl *minio.Client, bucket, prefix string) (Span, error) {
	var s Span
	for info := range cl.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if info.Err != nil {
			return Span{}, info.Err
		}
		if !strings.HasSuffix(info.Key, ".pcap") {
			continue
		}
		s.Objects++
		if t, ok := KeyStart(info.Key); ok {
			if s.First.IsZero() || t.Before(s.First) {
				s.First = t
			}
			if t.After(s.Last) {
				s.Last = t
			}
		}
	}
	return s, nil
}

// KeyTime is the layout of the first packet time in an object's name,
// "<start UTC>-<first stream seq>.pcap".
const KeyTime = "20060102T150405.000000000Z"

// KeyStart is the first packet time the sink puts in an object's name.
func KeyStart(key string) (time.Time, bool) {
	base := key[strings.LastIndexByte(key, '/')+1:]
	stamp, _, ok := strings.Cut(base, "-")
	if !ok {
		return time.Time{}, false
	}
	t, err := time.Parse(KeyTime, stamp)
	return t, err == nil
}

// Remove deletes every object under prefix and says how many it found.
// listErr is the listing's failure, as it came; removeErr joins the
// deletions' failures, each naming its key.
func Remove(ctx context.Context, cl *minio.Client, bucket, prefix string) (found int, listErr, removeErr error) {
	keys := make(chan minio.ObjectInfo)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(keys)
		for info := range cl.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
			if info.Err != nil {
				listErr = info.Err
				return
			}
			found++
			select {
			case keys <- info:
			case <-ctx.Done():
				return
			}
		}
	}()
	var errs []error
	for r := range cl.RemoveObjects(ctx, bucket, keys, minio.RemoveObjectsOptions{}) {
		errs = append(errs, fmt.Errorf("delete %s: %w", r.ObjectName, r.Err))
	}
	<-done
	return found, listErr, errors.Join(errs...)
}
