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
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/capstream/capstream/internal/pcapmerge"
	"github.com/capstream/capstream/internal/pcapobjects"
	"github.com/capstream/capstream/schemas"
	v3 "github.com/capstream/capstream/schemas/v3"
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

// mergeFanIn is how many objects copy --merge reads at once; more are
// merged in rounds (pcapmerge.MergeFiles). Tests lower it.
var mergeFanIn = pcapmerge.MaxOpen

// pcapObject is one object of a capture.
type pcapObject struct {
	key       string
	size      int64
	first     time.Time
	last      time.Time
	sha256hex string
}

// listObjects lists the completed objects under dir, oldest first, keeping
// those that overlap [since, until] when either is set.
func listObjects(ctx context.Context, cl *minio.Client, s3 *s3Flags, dir string, since, until time.Time) ([]pcapObject, error) {
	listed, err := pcapobjects.List(ctx, cl, s3.cfg.Bucket, dir, pcapobjects.Filter{Since: since, Until: until})
	if err != nil {
		return nil, s3Error(err, s3)
	}
	objs := make([]pcapObject, len(listed))
	for i, o := range listed {
		objs[i] = pcapObject{key: o.Key, size: o.Size, first: o.First, last: o.Last, sha256hex: o.SHA256}
	}
	return objs, nil
}

// maxUIDLength is the longest capture UID the pipeline accepts (schemas
// checks batch headers the same way): 1 to 128 letters, digits and '-'.
const maxUIDLength = 128

func isUID(s string) bool {
	if s == "" || len(s) > maxUIDLength {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// captureUID picks the capture UID whose objects copy and clean act on: uid
// (--uid) when given; otherwise the live PacketCapture's, read through the
// kubeconfig; otherwise (no API server to ask, or no such capture) the one
// UID that has objects under the name. Several UIDs and no live capture to
// choose by is a usage error listing them: taking them all is how the
// objects of an earlier capture with the same name went along.
func captureUID(ctx context.Context, stderr io.Writer, kube *kubeFlags, cl *minio.Client, s3 *s3Flags, name, uid string) (string, error) {
	ns := kube.namespace
	if uid != "" {
		if !isUID(uid) {
			return "", usageError{Err: fmt.Errorf("invalid --uid %q: want 1 to %d letters, digits or '-'", uid, maxUIDLength)}
		}
		return uid, nil
	}
	live, why := liveUID(ctx, kube, name)
	if live != "" {
		return live, nil
	}
	uids, err := listUIDs(ctx, cl, s3, ns, name)
	if err != nil {
		return "", err
	}
	switch len(uids) {
	case 0:
		return "", fmt.Errorf("no pcap objects for capture %s/%s under s3://%s/%s: %w", ns, name, s3.cfg.Bucket, s3.captureDir(ns, name, "", ""), errNotFound)
	case 1:
		fmt.Fprintf(stderr, "capstream: %s; using uid %s, the only one with objects under the name\n", why, uids[0])
		return uids[0], nil
	}
	return "", ambiguousUIDs(ctx, cl, s3, ns, name, why, uids)
}

// liveUID is the UID of the PacketCapture in the API server, or "" and why
// there is none to go by.
func liveUID(ctx context.Context, kube *kubeFlags, name string) (uid, why string) {
	dyn, err := kube.dynamic()
	if err != nil {
		return "", fmt.Sprintf("no API server to ask (%v)", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	u, err := dyn.Resource(v3.Resource).Namespace(kube.namespace).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return "", fmt.Sprintf("no PacketCapture %s/%s in the API server", kube.namespace, name)
	case err != nil:
		return "", fmt.Sprintf("the API server cannot say which capture is live (%v)", kubeError(err, "packetcapture "+kube.namespace+"/"+name))
	case !isUID(string(u.GetUID())):
		return "", fmt.Sprintf("PacketCapture %s/%s has an unusable uid %q", kube.namespace, name, u.GetUID())
	}
	return string(u.GetUID()), ""
}

// listUIDs lists the UIDs that have a directory under the capture name,
// sorted; segments that cannot be a UID (objects of another layout, or
// put there by someone else) are ignored.
func listUIDs(ctx context.Context, cl *minio.Client, s3 *s3Flags, namespace, name string) ([]string, error) {
	dir := s3.captureDir(namespace, name, "", "")
	var uids []string
	for info := range cl.ListObjects(ctx, s3.cfg.Bucket, minio.ListObjectsOptions{Prefix: dir}) {
		if info.Err != nil {
			return nil, s3Error(info.Err, s3)
		}
		seg, ok := strings.CutSuffix(strings.TrimPrefix(info.Key, dir), "/")
		if ok && isUID(seg) {
			uids = append(uids, seg)
		}
	}
	sort.Strings(uids)
	return uids, nil
}

// maxListedUIDs bounds how many UIDs an ambiguity error details: each
// costs a listing of that UID's objects.
const maxListedUIDs = 20

// ambiguousUIDs is the usage error for several UIDs under one name: each
// UID with its object count and when its objects start (from the keys, so
// no object is read).
func ambiguousUIDs(ctx context.Context, cl *minio.Client, s3 *s3Flags, namespace, name, why string, uids []string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "capture %s/%s: objects of %d captures with this name under s3://%s/%s, and %s: pass --uid with one of",
		namespace, name, len(uids), s3.cfg.Bucket, s3.captureDir(namespace, name, "", ""), why)
	for i, uid := range uids {
		if i == maxListedUIDs {
			fmt.Fprintf(&b, "\n  ... and %d more", len(uids)-i)
			break
		}
		n := 0
		var first, last time.Time
		for info := range cl.ListObjects(ctx, s3.cfg.Bucket, minio.ListObjectsOptions{Prefix: s3.captureDir(namespace, name, uid, ""), Recursive: true}) {
			if info.Err != nil {
				return s3Error(info.Err, s3)
			}
			if !strings.HasSuffix(info.Key, ".pcap") {
				continue
			}
			n++
			if t, ok := keyStart(info.Key); ok {
				if first.IsZero() || t.Before(first) {
					first = t
				}
				if t.After(last) {
					last = t
				}
			}
		}
		fmt.Fprintf(&b, "\n  %s  %d objects", uid, n)
		if !first.IsZero() {
			fmt.Fprintf(&b, ", starting %s to %s", first.Format(time.RFC3339), last.Format(time.RFC3339))
		}
	}
	return usageError{Err: errors.New(b.String())}
}

// keyStart is the first packet time the sink puts in an object's name,
// "<start UTC>-<first stream seq>.pcap".
func keyStart(key string) (time.Time, bool) {
	base := key[strings.LastIndexByte(key, '/')+1:]
	stamp, _, ok := strings.Cut(base, "-")
	if !ok {
		return time.Time{}, false
	}
	t, err := time.Parse("20060102T150405.000000000Z", stamp)
	return t, err == nil
}

// noObjects is the error for a capture UID without objects; it names the
// other UIDs of the name, whose objects --uid reaches.
func noObjects(ctx context.Context, cl *minio.Client, s3 *s3Flags, namespace, name, uid, dir string) error {
	msg := fmt.Sprintf("no pcap objects for capture %s/%s (uid %s) under s3://%s/%s", namespace, name, uid, s3.cfg.Bucket, dir)
	if uids, err := listUIDs(ctx, cl, s3, namespace, name); err == nil {
		others := slices.DeleteFunc(uids, func(u string) bool { return u == uid })
		if len(others) > maxListedUIDs {
			others = append(others[:maxListedUIDs], "...")
		}
		if len(others) > 0 {
			msg += fmt.Sprintf("; earlier captures with this name have objects under uid %s (pass --uid)", strings.Join(others, ", "))
		}
	}
	return fmt.Errorf("%s: %w", msg, errNotFound)
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

// prepareCopyDir makes the download directory and names the merged
// output, checked before anything is downloaded: bounded like a key
// segment (a 253-byte name plus its namespace is longer than a file name
// may be), not a directory, in a directory that takes files.
func prepareCopyDir(dir, namespace, name string, merge bool) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", usageError{Err: fmt.Errorf("-d %s: %w", dir, err)}
	}
	out := filepath.Join(dir, schemas.Shorten(namespace+"_"+name, 255-len(".pcap"))+".pcap")
	if merge {
		if err := pcapmerge.CheckOutput(out); err != nil {
			return "", usageError{Err: fmt.Errorf("--merge: %w", err)}
		}
	}
	return out, nil
}

// finishCopy merges the downloaded files with --merge and says what was
// done.
func finishCopy(stdout io.Writer, files []string, total int64, uid, dir, out string, merge bool) error {
	if !merge {
		fmt.Fprintf(stdout, "downloaded %d objects (%s) of capture uid %s to %s\n", len(files), humanBytes(total), uid, dir)
		return nil
	}
	st, err := pcapmerge.MergeFiles(out, files, mergeFanIn)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "merged %d objects, %d packets, of capture uid %s into %s\n", len(files), st.Packets, uid, out)
	return nil
}

func newCopyCmd() *cobra.Command {
	var s3 s3Flags
	var kube kubeFlags
	var api apiFlags
	var uidFlag, node, sinceS, untilS, dir string
	var merge, quiet bool
	c := &cobra.Command{
		Use:   "copy NAME [-n NAMESPACE] [--uid UID] [--node N] [--since T] [--until T] [--merge] -d DIR",
		Short: "Download a capture's pcaps from S3",
		Long: `copy downloads the completed pcap objects of a capture into DIR, keeping the
<node>/<pod>_<iface>/ layout of the object store. With --merge it writes
one time-ordered pcap, DIR/<namespace>_<name>.pcap, instead, and checks
that it can write that file before downloading anything. --since and
--until take RFC 3339 times or durations ago (15m) and keep the objects
whose packets overlap that window. Checksums recorded by the sink are
verified. Progress goes to stderr.

Objects are kept per capture UID, so a capture deleted and re-created
under the same name does not take its predecessor's objects along. Without
--uid, copy takes the live PacketCapture's UID (through the kubeconfig);
when there is none to ask, the only UID with objects under the name; with
several, it lists them and asks for --uid.

copy goes through the access API (--server or $CAPSTREAM_ACCESS_URL, its
CA from --certificate-authority or $CAPSTREAM_ACCESS_CA) as the
kubeconfig's user, who needs get on packetcaptures/files in the
namespace. --direct reads S3 with its credentials instead (admin mode).`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			name, namespace := args[0], kube.namespace
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
			if uidFlag != "" && !isUID(uidFlag) {
				return usageError{Err: fmt.Errorf("invalid --uid %q: want 1 to %d letters, digits or '-'", uidFlag, maxUIDLength)}
			}
			if !api.direct {
				cl, err := api.client(&kube)
				if err != nil {
					return err
				}
				return copyViaAPI(c.Context(), c.OutOrStdout(), c.ErrOrStderr(), cl, copyRequest{namespace: namespace, name: name, uid: uidFlag,
					node: node, since: since, until: until, dir: dir, merge: merge, quiet: quiet})
			}
			cl, err := s3.client()
			if err != nil {
				return err
			}
			uid, err := captureUID(c.Context(), c.ErrOrStderr(), &kube, cl, &s3, name, uidFlag)
			if err != nil {
				return err
			}
			listed := s3.captureDir(namespace, name, uid, node)
			objs, err := listObjects(c.Context(), cl, &s3, listed, since, until)
			if err != nil {
				return err
			}
			if len(objs) == 0 {
				return noObjects(c.Context(), cl, &s3, namespace, name, uid, listed)
			}
			out, err := prepareCopyDir(dir, namespace, name, merge)
			if err != nil {
				return err
			}
			var total int64
			for _, o := range objs {
				total += o.size
			}
			p := newProgress(c.ErrOrStderr(), total, len(objs), quiet)
			base := s3.captureDir(namespace, name, uid, "")
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
			return finishCopy(c.OutOrStdout(), files, total, uid, dir, out, merge)
		},
	}
	s3.add(c.Flags())
	kube.add(c.Flags())
	api.add(c.Flags())
	c.Flags().StringVar(&uidFlag, "uid", "", "the capture UID whose objects to take (default: the live capture's, else the only one with objects)")
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
	var kube kubeFlags
	var api apiFlags
	var uidFlag string
	c := &cobra.Command{
		Use:   "clean NAME [-n NAMESPACE] [--uid UID]",
		Short: "Delete a capture's pcaps from S3",
		Long: `clean deletes the pcap objects of one capture UID: the live PacketCapture's
(through the kubeconfig), or with none to ask the only UID with objects
under the name, or --uid. Objects of other captures that had the same name
stay; with several UIDs and no live capture, clean lists them and asks for
--uid.

clean goes through the access API as the kubeconfig's user, who needs
delete on packetcaptures/files in the namespace; --direct deletes in S3
with its credentials (admin mode).`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			name, namespace := args[0], kube.namespace
			if err := checkCaptureName(namespace, name); err != nil {
				return err
			}
			if uidFlag != "" && !isUID(uidFlag) {
				return usageError{Err: fmt.Errorf("invalid --uid %q: want 1 to %d letters, digits or '-'", uidFlag, maxUIDLength)}
			}
			if !api.direct {
				cl, err := api.client(&kube)
				if err != nil {
					return err
				}
				return cleanViaAPI(c.Context(), c.OutOrStdout(), cl, namespace, name, uidFlag)
			}
			cl, err := s3.client()
			if err != nil {
				return err
			}
			uid, err := captureUID(c.Context(), c.ErrOrStderr(), &kube, cl, &s3, name, uidFlag)
			if err != nil {
				return err
			}
			prefix := s3.captureDir(namespace, name, uid, "")
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
				return noObjects(c.Context(), cl, &s3, namespace, name, uid, prefix)
			}
			fmt.Fprintf(c.OutOrStdout(), "deleted %d objects of capture uid %s under s3://%s/%s\n", found, uid, s3.cfg.Bucket, prefix)
			return nil
		},
	}
	s3.add(c.Flags())
	kube.add(c.Flags())
	api.add(c.Flags())
	c.Flags().StringVar(&uidFlag, "uid", "", "the capture UID whose objects to delete (default: the live capture's, else the only one with objects)")
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
