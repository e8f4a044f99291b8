package main

// copy and clean --direct: S3 read and written with its credentials, the
// capture UID picked here as the access API picks it.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/capstream/capstream/internal/pcapobjects"
	v3 "github.com/capstream/capstream/schemas/v3"
)

// direct opens S3 and picks the capture UID copy and clean act on.
func (f *objectFlags) direct(ctx context.Context, stderr io.Writer, name string) (*minio.Client, string, error) {
	cl, err := f.s3.client()
	if err != nil {
		return nil, "", err
	}
	uid, err := captureUID(ctx, stderr, &f.kube, cl, &f.s3, name, f.uid)
	if err != nil {
		return nil, "", err
	}
	return cl, uid, nil
}

// copyDirect is copy with --direct: the completed objects of the UID's
// directory (or one node's), oldest first, keeping those that overlap
// [since, until] when either is set.
func copyDirect(ctx context.Context, stdout, stderr io.Writer, f *objectFlags, r copyRequest) error {
	cl, uid, err := f.direct(ctx, stderr, r.name)
	if err != nil {
		return err
	}
	listed := f.s3.captureDir(r.namespace, r.name, uid, r.node)
	objs, err := pcapobjects.List(ctx, cl, f.s3.cfg.Bucket, listed, pcapobjects.Filter{Since: r.since, Until: r.until})
	if err != nil {
		return s3Error(err, &f.s3)
	}
	if len(objs) == 0 {
		return noObjects(ctx, cl, &f.s3, r.namespace, r.name, uid, listed)
	}
	open := func(ctx context.Context, o pcapobjects.Object) (io.ReadCloser, error) {
		obj, err := cl.GetObject(ctx, f.s3.cfg.Bucket, o.Key, minio.GetObjectOptions{})
		if err != nil {
			return nil, fmt.Errorf("get %s: %w", o.Key, err)
		}
		return obj, nil
	}
	return copyObjects(ctx, stdout, stderr, r, uid, f.s3.captureDir(r.namespace, r.name, uid, ""), objs, open)
}

// cleanDirect is clean with --direct.
func cleanDirect(ctx context.Context, stdout, stderr io.Writer, f *objectFlags, namespace, name string) error {
	cl, uid, err := f.direct(ctx, stderr, name)
	if err != nil {
		return err
	}
	prefix := f.s3.captureDir(namespace, name, uid, "")
	found, listErr, err := pcapobjects.Remove(ctx, cl, f.s3.cfg.Bucket, prefix)
	if listErr != nil {
		return s3Error(listErr, &f.s3)
	}
	if err != nil {
		return err
	}
	if found == 0 {
		return noObjects(ctx, cl, &f.s3, namespace, name, uid, prefix)
	}
	fmt.Fprintf(stdout, "deleted %d objects of capture uid %s under s3://%s/%s\n", found, uid, f.s3.cfg.Bucket, prefix)
	return nil
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
		if !pcapobjects.ValidUID(uid) {
			return "", usageError{Err: fmt.Errorf("invalid --uid %q: want 1 to %d letters, digits or '-'", uid, pcapobjects.MaxUIDLength)}
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
	case !pcapobjects.ValidUID(string(u.GetUID())):
		return "", fmt.Sprintf("PacketCapture %s/%s has an unusable uid %q", kube.namespace, name, u.GetUID())
	}
	return string(u.GetUID()), ""
}

// listUIDs lists the UIDs that have a directory under the capture name,
// sorted (pcapobjects.UIDs).
func listUIDs(ctx context.Context, cl *minio.Client, s3 *s3Flags, namespace, name string) ([]string, error) {
	uids, err := pcapobjects.UIDs(ctx, cl, s3.cfg.Bucket, s3.captureDir(namespace, name, "", ""))
	if err != nil {
		return nil, s3Error(err, s3)
	}
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
		span, err := pcapobjects.Count(ctx, cl, s3.cfg.Bucket, s3.captureDir(namespace, name, uid, ""))
		if err != nil {
			return s3Error(err, s3)
		}
		fmt.Fprintf(&b, "\n  %s  %d objects", uid, span.Objects)
		if !span.First.IsZero() {
			fmt.Fprintf(&b, ", starting %s to %s", span.First.Format(time.RFC3339), span.Last.Format(time.RFC3339))
		}
	}
	return usageError{Err: errors.New(b.String())}
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
