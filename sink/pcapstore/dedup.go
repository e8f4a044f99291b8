package pcapstore

import (
	"context"
	"fmt"
	"net/textproto"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/capstream/capstream/schemas"
)

// completed is what is known of an interface's completed objects, for
// deduplicating redelivered batches.
type completed struct {
	seen    map[string]bool // keys of objects
	objects []doneObject
	used    time.Time
}

type doneObject struct {
	key      string
	at       time.Time
	producer string
	seqs     ranges
}

func (c *completed) add(o doneObject) {
	c.seen[o.key] = true
	c.objects = append(c.objects, o)
}

func (c *completed) has(producer string, seq uint64) bool {
	for _, o := range c.objects {
		if o.producer == producer && o.seqs.has(seq) {
			return true
		}
	}
	return false
}

// isDuplicate reports whether a redelivered batch is already in a
// completed object. What this process completed is known; otherwise the
// interface's recent objects are listed in S3 and the ones not seen yet are
// read (their metadata lists the batches they hold). Listing again on every
// miss, rather than once, is what makes this hold with several replicas:
// another replica may have completed an object since the last look.
// Objects found are re-indexed, which repairs a crash between upload and
// index insert; the table collapses the identical rows.
func (s *Sink) isDuplicate(ctx context.Context, k ifaceKey, h *schemas.BatchHeader) (bool, error) {
	c := s.done[k]
	if c == nil {
		c = &completed{seen: map[string]bool{}}
		s.done[k] = c
	}
	c.used = time.Now()
	if c.has(h.Producer, h.Seq) {
		return true, nil
	}
	cutoff := time.Now().Add(-s.cfg.DedupWindow)
	var rows []indexRow
	for info := range s.deps.S3.ListObjects(ctx, s.cfg.S3.Bucket, minio.ListObjectsOptions{Prefix: ifaceDir(s.cfg.Prefix, h), Recursive: true}) {
		if info.Err != nil {
			return false, fmt.Errorf("list objects of %s: %w", ifaceDir(s.cfg.Prefix, h), info.Err)
		}
		if c.seen[info.Key] || info.LastModified.Before(cutoff) || !strings.HasSuffix(info.Key, ".pcap") {
			continue
		}
		st, err := s.deps.S3.StatObject(ctx, s.cfg.S3.Bucket, info.Key, minio.StatObjectOptions{})
		if err != nil {
			return false, fmt.Errorf("stat object %s: %w", info.Key, err)
		}
		meta := make(map[string]string, len(st.UserMetadata))
		for mk, v := range st.UserMetadata {
			meta[textproto.CanonicalMIMEHeaderKey(mk)] = v
		}
		row, err := rowFromMetadata(info.Key, st.Size, meta)
		if err != nil {
			s.log.Warn("ignoring object without capstream metadata", "key", info.Key, "error", err)
			continue
		}
		if row.UID != k.uid {
			// The directory is the UID's (ifaceDir), so only an object
			// put there by something else than this sink gets here.
			continue
		}
		rows = append(rows, row)
		c.add(doneObject{key: info.Key, at: st.LastModified, producer: row.Producer, seqs: row.Batches})
	}
	if len(rows) > 0 {
		if err := insertIndexRows(ctx, s.deps.ClickHouse, s.cfg.S3.Bucket, rows); err != nil {
			return false, err
		}
	}
	return c.has(h.Producer, h.Seq), nil
}

// prune forgets completed objects older than the dedup window: their
// batches can no longer be redelivered.
func (s *Sink) prune() {
	cutoff := time.Now().Add(-s.cfg.DedupWindow)
	for k, c := range s.done {
		kept := c.objects[:0]
		for _, o := range c.objects {
			if o.at.After(cutoff) {
				kept = append(kept, o)
			} else {
				delete(c.seen, o.key)
			}
		}
		c.objects = kept
		if c.used.Before(cutoff) {
			delete(s.done, k)
		}
	}
}
