package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/spf13/cobra"

	"github.com/capstream/capstream/internal/pcapmerge"
	"github.com/capstream/capstream/schemas"
)

// Object metadata the pcap sink writes (read back canonicalised).
const (
	metaFirstTime = "Capstream-First-Time"
	metaLastTime  = "Capstream-Last-Time"
	metaSHA256    = "Capstream-Sha256"
)

func newCapturedPacketsCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "captured-packets",
		Short: "Download or delete a capture's pcap objects",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return usageError{Err: errors.New("captured-packets needs a subcommand: copy or clean")}
		},
	}
	c.AddCommand(newCopyCmd(), newCleanCmd())
	return c
}

// pcapObject is one object of a capture.
type pcapObject struct {
	key       string
	size      int64
	first     time.Time
	last      time.Time
	sha256hex string
}

// listObjects lists a capture's completed objects, oldest first, keeping
// those that overlap [since, until] when either is set.
func listObjects(ctx context.Context, cl *minio.Client, s3 *s3Flags, namespace, name, node string, since, until time.Time) ([]pcapObject, error) {
	prefix := s3.captureDir(namespace, name, node)
	var objs []pcapObject
	for info := range cl.ListObjects(ctx, s3.cfg.Bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if info.Err != nil {
			return nil, s3Error(info.Err, s3)
		}
		if !strings.HasSuffix(info.Key, ".pcap") {
			continue
		}
		o := pcapObject{key: info.Key, size: info.Size}
		st, err := cl.StatObject(ctx, s3.cfg.Bucket, info.Key, minio.StatObjectOptions{})
		if err != nil {
			return nil, s3Error(err, s3)
		}
		meta := map[string]string{}
		for k, v := range st.UserMetadata {
			meta[strings.ToLower(k)] = v
		}
		o.first, _ = time.Parse(time.RFC3339Nano, meta[strings.ToLower(metaFirstTime)])
		o.last, _ = time.Parse(time.RFC3339Nano, meta[strings.ToLower(metaLastTime)])
		o.sha256hex = meta[strings.ToLower(metaSHA256)]
		if !since.IsZero() && !o.last.IsZero() && o.last.Before(since) {
			continue
		}
		if !until.IsZero() && !o.first.IsZero() && o.first.After(until) {
			continue
		}
		objs = append(objs, o)
	}
	sort.Slice(objs, func(i, j int) bool {
		if !objs[i].first.Equal(objs[j].first) {
			return objs[i].first.Before(objs[j].first)
		}
		return objs[i].key < objs[j].key
	})
	return objs, nil
}

// s3Error classifies an S3 failure for the exit code.
func s3Error(err error, s3 *s3Flags) error {
	var op *net.OpError
	if errors.As(err, &op) {
		return fmt.Errorf("s3 %s: %w: %v", s3.cfg.Endpoint, errUnavailable, err)
	}
	if minio.ToErrorResponse(err).Code == "NoSuchBucket" {
		return fmt.Errorf("s3 bucket %s: %w", s3.cfg.Bucket, errNotFound)
	}
	return fmt.Errorf("s3 %s: %w", s3.cfg.Endpoint, err)
}

func parseTimeFlag(name, v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(v); err == nil {
		return time.Now().Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, usageError{Err: fmt.Errorf("--%s %q: want an RFC 3339 time or a duration ago such as 15m", name, v)}
	}
	return t, nil
}

func newCopyCmd() *cobra.Command {
	var s3 s3Flags
	var namespace, node, sinceS, untilS, dir string
	var merge, quiet bool
	c := &cobra.Command{
		Use:   "copy NAME [-n NAMESPACE] [--node N] [--since T] [--until T] [--merge] -d DIR",
		Short: "Download a capture's pcaps from S3",
		Long: `copy downloads the completed pcap objects of a capture into DIR, keeping the
<node>/<pod>_<iface>/ layout of the object store. With --merge it writes
one time-ordered pcap, DIR/<namespace>_<name>.pcap, instead. --since and
--until take RFC 3339 times or durations ago (15m) and keep the objects
whose packets overlap that window. Checksums recorded by the sink are
verified. Progress goes to stderr.`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			name := args[0]
			if err := checkCaptureName(namespace, name); err != nil {
				return err
			}
			if dir == "" {
				return usageError{Err: errors.New("copy needs -d DIR")}
			}
			since, err := parseTimeFlag("since", sinceS)
			if err != nil {
				return err
			}
			until, err := parseTimeFlag("until", untilS)
			if err != nil {
				return err
			}
			cl, err := s3.client()
			if err != nil {
				return err
			}
			objs, err := listObjects(c.Context(), cl, &s3, namespace, name, node, since, until)
			if err != nil {
				return err
			}
			if len(objs) == 0 {
				return fmt.Errorf("no pcap objects for capture %s/%s under s3://%s/%s: %w", namespace, name, s3.cfg.Bucket, s3.captureDir(namespace, name, node), errNotFound)
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			// Named before anything is downloaded, and bounded like a key
			// segment: a 253-byte name plus its namespace is longer than
			// a file name may be.
			out := filepath.Join(dir, schemas.Shorten(namespace+"_"+name, 255-len(".pcap"))+".pcap")
			var total int64
			for _, o := range objs {
				total += o.size
			}
			p := newProgress(c.ErrOrStderr(), total, len(objs), quiet)
			base := s3.captureDir(namespace, name, "")
			var files []string
			partsDir := dir
			if merge {
				partsDir, err = os.MkdirTemp(dir, ".parts-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(partsDir)
			}
			for _, o := range objs {
				rel := strings.TrimPrefix(o.key, base)
				if strings.Contains(rel, "..") || filepath.IsAbs(rel) {
					return fmt.Errorf("object key %q escapes the download directory", o.key)
				}
				dst := filepath.Join(partsDir, filepath.FromSlash(rel))
				if err := download(c.Context(), cl, s3.cfg.Bucket, o, dst, p); err != nil {
					return err
				}
				files = append(files, dst)
			}
			p.done()
			if !merge {
				fmt.Fprintf(c.OutOrStdout(), "downloaded %d objects (%s) to %s\n", len(files), humanBytes(total), dir)
				return nil
			}
			st, err := pcapmerge.MergeFiles(out, files, pcapmerge.MaxOpen)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "merged %d objects, %d packets, into %s\n", len(files), st.Packets, out)
			return nil
		},
	}
	s3.add(c.Flags())
	c.Flags().StringVarP(&namespace, "namespace", "n", "default", "the capture's namespace")
	c.Flags().StringVar(&node, "node", "", "only this node's objects")
	c.Flags().StringVar(&sinceS, "since", "", "only objects with packets at or after this time (RFC 3339 or duration ago)")
	c.Flags().StringVar(&untilS, "until", "", "only objects with packets at or before this time")
	c.Flags().BoolVar(&merge, "merge", false, "write one time-ordered pcap instead of the objects")
	c.Flags().StringVarP(&dir, "dir", "d", "", "directory to download into")
	c.Flags().BoolVarP(&quiet, "quiet", "q", false, "no progress output")
	return c
}

// download fetches one object to dst through a temp file, verifying the
// size and, when recorded, the SHA-256, so a partial file never takes the
// final name.
func download(ctx context.Context, cl *minio.Client, bucket string, o pcapObject, dst string, p *progress) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	obj, err := cl.GetObject(ctx, bucket, o.key, minio.GetObjectOptions{})
	if err != nil {
		return fmt.Errorf("get %s: %w", o.key, err)
	}
	defer obj.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".download-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h, p), obj)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("download %s: %w", o.key, err)
	}
	if n != o.size {
		return fmt.Errorf("download %s: got %d bytes, want %d", o.key, n, o.size)
	}
	if sum := hex.EncodeToString(h.Sum(nil)); o.sha256hex != "" && !strings.EqualFold(sum, o.sha256hex) {
		return fmt.Errorf("download %s: sha256 %s, the sink recorded %s", o.key, sum, o.sha256hex)
	}
	p.object()
	return os.Rename(tmp.Name(), dst)
}

func newCleanCmd() *cobra.Command {
	var s3 s3Flags
	var namespace string
	c := &cobra.Command{
		Use:   "clean NAME [-n NAMESPACE]",
		Short: "Delete a capture's pcaps from S3",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			name := args[0]
			if err := checkCaptureName(namespace, name); err != nil {
				return err
			}
			cl, err := s3.client()
			if err != nil {
				return err
			}
			prefix := s3.captureDir(namespace, name, "")
			keys := make(chan minio.ObjectInfo)
			var listErr error
			found := 0
			go func() {
				defer close(keys)
				for info := range cl.ListObjects(c.Context(), s3.cfg.Bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
					if info.Err != nil {
						listErr = info.Err
						return
					}
					found++
					keys <- info
				}
			}()
			var errs []error
			for r := range cl.RemoveObjects(c.Context(), s3.cfg.Bucket, keys, minio.RemoveObjectsOptions{}) {
				errs = append(errs, fmt.Errorf("delete %s: %w", r.ObjectName, r.Err))
			}
			if listErr != nil {
				return s3Error(listErr, &s3)
			}
			if err := errors.Join(errs...); err != nil {
				return err
			}
			if found == 0 {
				return fmt.Errorf("no pcap objects for capture %s/%s under s3://%s/%s: %w", namespace, name, s3.cfg.Bucket, prefix, errNotFound)
			}
			fmt.Fprintf(c.OutOrStdout(), "deleted %d objects under s3://%s/%s\n", found, s3.cfg.Bucket, prefix)
			return nil
		},
	}
	s3.add(c.Flags())
	c.Flags().StringVarP(&namespace, "namespace", "n", "default", "the capture's namespace")
	return c
}

// progress reports download progress: a redrawn bar on a terminal, a line
// every few seconds otherwise (so CI logs stay short).
type progress struct {
	mu        sync.Mutex
	w         io.Writer
	tty       bool
	quiet     bool
	total     int64
	doneBytes int64
	objects   int
	nobj      int
	start     time.Time
	last      time.Time
}

func newProgress(w io.Writer, total int64, objects int, quiet bool) *progress {
	tty := false
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	return &progress{w: w, tty: tty, quiet: quiet, total: total, nobj: objects, start: time.Now()}
}

// Write counts downloaded bytes.
func (p *progress) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.doneBytes += int64(len(b))
	p.draw(false)
	return len(b), nil
}

func (p *progress) object() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.objects++
	p.draw(true)
}

func (p *progress) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.quiet {
		return
	}
	if p.tty {
		fmt.Fprintln(p.w)
	}
}

func (p *progress) draw(force bool) {
	if p.quiet {
		return
	}
	now := time.Now()
	every := 3 * time.Second
	if p.tty {
		every = 100 * time.Millisecond
	}
	if !force && now.Sub(p.last) < every {
		return
	}
	if !p.tty && force && p.objects != p.nobj && now.Sub(p.last) < every {
		return
	}
	p.last = now
	pct := 100.0
	if p.total > 0 {
		pct = float64(p.doneBytes) * 100 / float64(p.total)
	}
	rate := float64(p.doneBytes) / max(now.Sub(p.start).Seconds(), 0.001)
	line := fmt.Sprintf("%3.0f%% %s/%s  %d/%d objects  %s/s", pct, humanBytes(p.doneBytes), humanBytes(p.total), p.objects, p.nobj, humanBytes(int64(rate)))
	if p.tty {
		const width = 30
		filled := int(pct / 100 * width)
		fmt.Fprintf(p.w, "\r[%s%s] %s", strings.Repeat("=", filled), strings.Repeat(" ", width-filled), line)
		return
	}
	fmt.Fprintln(p.w, "download: "+line)
}
