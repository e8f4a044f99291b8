package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/minio/minio-go/v7"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/capstream/capstream/internal/pcapmerge"
	"github.com/capstream/capstream/internal/pcapobjects"
	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/schemas"
	v3 "github.com/capstream/capstream/schemas/v3"
)

// putPcap stores a pcap object the way the pcap sink lays them out.
func putPcap(t *testing.T, b *testenv.S3Bucket, key string, stamps ...int64) []byte {
	t.Helper()
	recs := make([]testenv.PcapRecord, len(stamps))
	for i, ns := range stamps {
		recs[i] = testenv.Record(time.Unix(0, ns), []byte(fmt.Sprintf("packet at %d", ns)))
	}
	file := testenv.PcapBytes(t, recs...)
	sum := sha256.Sum256(file)
	meta := map[string]string{
		pcapobjects.MetaFirstTime: time.Unix(0, stamps[0]).UTC().Format(time.RFC3339Nano),
		pcapobjects.MetaLastTime:  time.Unix(0, stamps[len(stamps)-1]).UTC().Format(time.RFC3339Nano),
		pcapobjects.MetaSHA256:    hex.EncodeToString(sum[:]),
	}
	if _, err := b.Client.PutObject(t.Context(), b.Bucket, key, bytes.NewReader(file), int64(len(file)),
		minio.PutObjectOptions{UserMetadata: meta}); err != nil {
		t.Fatal(err)
	}
	return file
}

func TestCapturedPacketsCopyAndClean(t *testing.T) {
	// The previous release's names, which must keep working.
	b := s3Bucket(t, "CAPSTREAM_S3_ACCESS_KEY", "CAPSTREAM_S3_SECRET_KEY")
	t.Setenv("KUBECONFIG", unreachableKubeconfig(t))
	sec := int64(time.Second)
	t0 := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC).UnixNano()
	// One capture UID under the name and no API server to ask (no
	// kubeconfig): copy and clean take that UID.
	objA1 := putPcap(t, b, "capstream/ns1/cap/u1/node-a/pod-a_cali1/20261127T100000.000000000Z-1.pcap", t0, t0+2*sec)
	putPcap(t, b, "capstream/ns1/cap/u1/node-a/pod-a_cali1/20261127T100004.000000000Z-9.pcap", t0+4*sec, t0+5*sec)
	putPcap(t, b, "capstream/ns1/cap/u1/node-b/pod-b_cali2/20261127T100001.000000000Z-3.pcap", t0+1*sec, t0+3*sec)
	putPcap(t, b, "capstream/ns1/other/u2/node-a/pod-a_cali1/20261127T100000.000000000Z-1.pcap", t0)

	dir := t.TempDir()
	code, out, errOut := runCmd(t, "captured-packets", "copy", "--direct", "cap", "-n", "ns1", "-d", dir)
	if code != exitOK || !strings.Contains(out, "downloaded 3 objects") || !strings.Contains(errOut, "using uid u1") {
		t.Fatalf("copy = %d %q %q", code, out, errOut)
	}
	got, err := os.ReadFile(filepath.Join(dir, "node-a/pod-a_cali1/20261127T100000.000000000Z-1.pcap"))
	if err != nil || !bytes.Equal(got, objA1) {
		t.Errorf("downloaded object differs or is missing: %v", err)
	}
	if !strings.Contains(errOut, "download:") {
		t.Errorf("no progress on stderr: %q", errOut)
	}

	mdir := t.TempDir()
	code, out, errOut = runCmd(t, "captured-packets", "copy", "--direct", "cap", "-n", "ns1", "--merge", "-d", mdir)
	if code != exitOK || !strings.Contains(out, "6 packets") {
		t.Fatalf("copy --merge = %d %q %q", code, out, errOut)
	}
	stamps := readStamps(t, filepath.Join(mdir, "ns1_cap.pcap"))
	want := []int64{t0, t0 + sec, t0 + 2*sec, t0 + 3*sec, t0 + 4*sec, t0 + 5*sec}
	if fmt.Sprint(stamps) != fmt.Sprint(want) {
		t.Errorf("merged stamps %v, want %v", stamps, want)
	}
	if entries, _ := os.ReadDir(mdir); len(entries) != 1 {
		t.Errorf("merge left %d entries in the directory, want only the merged pcap", len(entries))
	}

	ndir := t.TempDir()
	code, out, _ = runCmd(t, "captured-packets", "copy", "--direct", "cap", "-n", "ns1", "--node", "node-b", "-q", "-d", ndir)
	if code != exitOK || !strings.Contains(out, "downloaded 1 objects") {
		t.Errorf("copy --node = %d %q", code, out)
	}
	wdir := t.TempDir()
	code, out, _ = runCmd(t, "captured-packets", "copy", "--direct", "cap", "-n", "ns1", "--since", "2026-11-27T10:00:03.5Z", "-q", "-d", wdir)
	if code != exitOK || !strings.Contains(out, "downloaded 1 objects") {
		t.Errorf("copy --since = %d %q", code, out)
	}

	for name, tc := range map[string]struct {
		args []string
		code int
	}{
		"missing capture": {[]string{"captured-packets", "copy", "--direct", "nope", "-n", "ns1", "-d", t.TempDir()}, exitNotFound},
		"bad name":        {[]string{"captured-packets", "copy", "--direct", "a/../b", "-n", "ns1", "-d", t.TempDir()}, exitUsage},
		"no dir":          {[]string{"captured-packets", "copy", "--direct", "cap", "-n", "ns1"}, exitUsage},
		"bad since":       {[]string{"captured-packets", "copy", "--direct", "cap", "-n", "ns1", "--since", "yesterday", "-d", t.TempDir()}, exitUsage},
		"unreachable":     {[]string{"captured-packets", "copy", "--direct", "cap", "-n", "ns1", "--s3-endpoint", "127.0.0.1:1", "-d", t.TempDir()}, exitUnavailable},
	} {
		t.Run(name, func(t *testing.T) {
			code, _, errOut := runCmd(t, tc.args...)
			if code != tc.code || errOut == "" {
				t.Errorf("exit %d stderr %q, want %d", code, errOut, tc.code)
			}
		})
	}

	code, out, errOut = runCmd(t, "captured-packets", "clean", "--direct", "cap", "-n", "ns1")
	if code != exitOK || !strings.Contains(out, "deleted 3 objects") {
		t.Fatalf("clean = %d %q %q", code, out, errOut)
	}
	if code, _, _ := runCmd(t, "captured-packets", "clean", "--direct", "cap", "-n", "ns1"); code != exitNotFound {
		t.Errorf("second clean = %d, want not found", code)
	}
	if _, err := b.Client.StatObject(t.Context(), b.Bucket, "capstream/ns1/other/u2/node-a/pod-a_cali1/20261127T100000.000000000Z-1.pcap", minio.StatObjectOptions{}); err != nil {
		t.Errorf("clean removed another capture's object: %v", err)
	}
}

func readStamps(t *testing.T, path string) []int64 {
	t.Helper()
	recs, err := testenv.ReadPcap(path)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]int64, len(recs))
	for i, r := range recs {
		out[i] = r.Info.Timestamp.UnixNano()
	}
	return out
}

// A 253-byte capture name is stored under a shortened key segment (as the
// pcap sink writes it) and merged into a file whose name is shortened the
// same way: copy finds the objects and writes a name the file system
// takes, instead of failing after the whole merge.
func TestCapturedPacketsCopyLongName(t *testing.T) {
	b := s3Bucket(t, "CAPSTREAM_S3_ACCESSKEY", "CAPSTREAM_S3_SECRETKEY")
	t.Setenv("KUBECONFIG", unreachableKubeconfig(t))
	label := strings.Repeat("c", 63)
	name := label + "." + label + "." + label + "." + label[:61] // 253 bytes
	t0 := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC).UnixNano()
	key := schemas.CaptureDir("capstream", "ns1", name, "u1") + "node-a/pod-a_cali1/20261127T100000.000000000Z-1.pcap"
	putPcap(t, b, key, t0, t0+1)
	dir := t.TempDir()
	code, out, errOut := runCmd(t, "captured-packets", "copy", "--direct", name, "-n", "ns1", "--merge", "-d", dir)
	if code != exitOK || !strings.Contains(out, "2 packets") {
		t.Fatalf("copy --merge = %d %q %q", code, out, errOut)
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 1 {
		t.Fatalf("entries %v, %v", entries, err)
	}
	if got := entries[0].Name(); len(got) > 255 || !strings.HasPrefix(got, "ns1_ccc") || !strings.HasSuffix(got, ".pcap") {
		t.Errorf("merged file %q (%d bytes)", got, len(got))
	}
}

// s3Bucket is a private bucket the user commands reach through the
// environment, its keys under the names given.
func s3Bucket(t *testing.T, accessKeyVar, secretKeyVar string) *testenv.S3Bucket {
	b := testenv.S3(t)
	t.Setenv("CAPSTREAM_S3_ENDPOINT", b.Endpoint)
	t.Setenv("CAPSTREAM_S3_SECURE", "true")
	t.Setenv("CAPSTREAM_S3_TLS_CAFILE", b.Config().TLS.CAFile)
	t.Setenv(accessKeyVar, b.AccessKey)
	t.Setenv(secretKeyVar, b.SecretKey)
	t.Setenv("CAPSTREAM_S3_BUCKET", b.Bucket)
	return b
}

// bucketKeys lists every key in the bucket, sorted.
func bucketKeys(t *testing.T, b *testenv.S3Bucket) []string {
	t.Helper()
	var keys []string
	for info := range b.Client.ListObjects(t.Context(), b.Bucket, minio.ListObjectsOptions{Recursive: true}) {
		if info.Err != nil {
			t.Fatal(info.Err)
		}
		keys = append(keys, info.Key)
	}
	sort.Strings(keys)
	return keys
}

// localFiles lists the files under dir, relative and slash-separated.
func localFiles(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		files = append(files, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(files)
	return files
}

// A PacketCapture deleted and re-created under the same name has a new
// UID; the pcap sink keeps each UID's objects apart. copy and clean
// without --uid act on the live capture's objects only, --uid reaches the
// earlier capture's, and clean leaves the other UID's objects in place.
func TestCapturedPacketsByUID(t *testing.T) {
	k := testenv.Kube(t)
	b := s3Bucket(t, "CAPSTREAM_S3_ACCESSKEY", "CAPSTREAM_S3_SECRETKEY")
	ns := k.Namespace(t, nil)
	first := k.CreateCapture(t, ns, "cap", `k8s-app == "web"`)
	oldUID := string(first.GetUID())
	if err := k.Dynamic.Resource(v3.Resource).Namespace(ns).Delete(t.Context(), "cap", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// Without finalizers the delete is immediate: the name is free again.
	newUID := string(k.CreateCapture(t, ns, "cap", `k8s-app == "web"`).GetUID())
	if newUID == oldUID || newUID == "" {
		t.Fatalf("re-created capture has uid %q, the first %q", newUID, oldUID)
	}
	sec := int64(time.Second)
	t0 := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC).UnixNano()
	t1 := t0 + 3600*sec
	oldDir, newDir := schemas.CaptureDir("capstream", ns, "cap", oldUID), schemas.CaptureDir("capstream", ns, "cap", newUID)
	oldObjs := map[string][]byte{
		"node-a/web-0_cali1/20261127T100000.000000000Z-1.pcap": putPcap(t, b, oldDir+"node-a/web-0_cali1/20261127T100000.000000000Z-1.pcap", t0, t0+sec),
		"node-a/web-0_cali1/20261127T100002.000000000Z-5.pcap": putPcap(t, b, oldDir+"node-a/web-0_cali1/20261127T100002.000000000Z-5.pcap", t0+2*sec),
		"node-b/web-1_cali2/20261127T100001.000000000Z-3.pcap": putPcap(t, b, oldDir+"node-b/web-1_cali2/20261127T100001.000000000Z-3.pcap", t0+sec),
	}
	newObjs := map[string][]byte{
		"node-a/web-0_cali1/20261127T110000.000000000Z-1.pcap": putPcap(t, b, newDir+"node-a/web-0_cali1/20261127T110000.000000000Z-1.pcap", t1, t1+2*sec),
		"node-c/web-2_cali3/20261127T110001.000000000Z-2.pcap": putPcap(t, b, newDir+"node-c/web-2_cali3/20261127T110001.000000000Z-2.pcap", t1+sec),
	}
	kube := []string{"-n", ns, "--kubeconfig", k.Kubeconfig}
	copyInto := func(extra ...string) (string, map[string][]byte) {
		t.Helper()
		dir := t.TempDir()
		code, out, errOut := runCmd(t, append(append([]string{"captured-packets", "copy", "--direct", "cap", "-q", "-d", dir}, kube...), extra...)...)
		if code != exitOK {
			t.Fatalf("copy %v = %d %q %q", extra, code, out, errOut)
		}
		got := map[string][]byte{}
		for _, f := range localFiles(t, dir) {
			got[f], _ = os.ReadFile(filepath.Join(dir, filepath.FromSlash(f)))
		}
		return out, got
	}
	out, got := copyInto()
	if diff := cmp.Diff(newObjs, got); diff != "" || !strings.Contains(out, "uid "+newUID) {
		t.Errorf("copy without --uid (-live capture's objects +downloaded):\n%s\n%s", diff, out)
	}
	if _, got := copyInto("--uid", oldUID); !cmp.Equal(oldObjs, got) {
		t.Errorf("copy --uid %s: got %d files, want the earlier capture's %d", oldUID, len(got), len(oldObjs))
	}
	mdir := t.TempDir()
	if code, out, errOut := runCmd(t, append([]string{"captured-packets", "copy", "--direct", "cap", "--merge", "-q", "-d", mdir}, kube...)...); code != exitOK {
		t.Fatalf("copy --merge = %d %q %q", code, out, errOut)
	}
	if stamps := readStamps(t, filepath.Join(mdir, ns+"_cap.pcap")); fmt.Sprint(stamps) != fmt.Sprint([]int64{t1, t1 + sec, t1 + 2*sec}) {
		t.Errorf("merged stamps %v, want the live capture's only", stamps)
	}

	// clean without --uid: the live capture's objects go, the earlier
	// capture's stay.
	var oldKeys []string
	for rel := range oldObjs {
		oldKeys = append(oldKeys, oldDir+rel)
	}
	sort.Strings(oldKeys)
	code, out, errOut := runCmd(t, append([]string{"captured-packets", "clean", "--direct", "cap"}, kube...)...)
	if code != exitOK || !strings.Contains(out, "deleted 2 objects") {
		t.Fatalf("clean = %d %q %q", code, out, errOut)
	}
	if diff := cmp.Diff(oldKeys, bucketKeys(t, b)); diff != "" {
		t.Errorf("bucket after clean (-the earlier capture's objects +left):\n%s", diff)
	}
	// With the live capture's objects gone, copy says where the others are.
	code, _, errOut = runCmd(t, append([]string{"captured-packets", "copy", "--direct", "cap", "-d", t.TempDir()}, kube...)...)
	if code != exitNotFound || !strings.Contains(errOut, oldUID) || !strings.Contains(errOut, "--uid") {
		t.Errorf("copy with the live capture's objects gone = %d %q, want not found naming %s", code, errOut, oldUID)
	}
	code, out, errOut = runCmd(t, append([]string{"captured-packets", "clean", "--direct", "cap", "--uid", oldUID}, kube...)...)
	if code != exitOK || !strings.Contains(out, "deleted 3 objects") {
		t.Fatalf("clean --uid = %d %q %q", code, out, errOut)
	}
	if left := bucketKeys(t, b); len(left) != 0 {
		t.Errorf("bucket after cleaning both: %v", left)
	}
	for _, bad := range []string{"../x", "a/b", strings.Repeat("u", 129)} {
		if code, _, errOut := runCmd(t, append([]string{"captured-packets", "clean", "--direct", "cap", "--uid", bad}, kube...)...); code != exitUsage {
			t.Errorf("clean --uid %q = %d %q, want a usage error", bad, code, errOut)
		}
	}
}

// Several UIDs under a name and no live capture to choose by: copy and
// clean refuse with exit 2, list each UID with its objects, and delete
// nothing, whether the API server has no such capture or cannot be
// reached.
func TestCapturedPacketsSeveralUIDs(t *testing.T) {
	k := testenv.Kube(t)
	b := s3Bucket(t, "CAPSTREAM_S3_ACCESSKEY", "CAPSTREAM_S3_SECRETKEY")
	ns := k.Namespace(t, nil)
	t0 := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC).UnixNano()
	const uidA, uidB = "0b1c2d3e-aaaa", "9f8e7d6c-bbbb"
	putPcap(t, b, schemas.CaptureDir("capstream", ns, "gone", uidA)+"node-a/p_cali1/20261127T100000.000000000Z-1.pcap", t0)
	putPcap(t, b, schemas.CaptureDir("capstream", ns, "gone", uidA)+"node-a/p_cali1/20261127T100500.000000000Z-7.pcap", t0+300e9)
	putPcap(t, b, schemas.CaptureDir("capstream", ns, "gone", uidB)+"node-b/p_cali2/20261127T120000.000000000Z-1.pcap", t0+7200e9)
	before := bucketKeys(t, b)
	for name, kubeconfig := range map[string]string{"no such capture": k.Kubeconfig, "unreachable": unreachableKubeconfig(t)} {
		for _, args := range [][]string{
			{"captured-packets", "copy", "--direct", "gone", "-d", t.TempDir()},
			{"captured-packets", "copy", "--direct", "gone", "--merge", "-d", t.TempDir()},
			{"captured-packets", "clean", "--direct", "gone"},
		} {
			code, out, errOut := runCmd(t, append(args, "-n", ns, "--kubeconfig", kubeconfig)...)
			if code != exitUsage || out != "" {
				t.Errorf("%s: %v = %d %q, want exit 2", name, args, code, out)
			}
			for _, want := range []string{"--uid", uidA + "  2 objects, starting 2026-11-27T10:00:00Z to 2026-11-27T10:05:00Z", uidB + "  1 objects"} {
				if !strings.Contains(errOut, want) {
					t.Errorf("%s: %v: stderr lacks %q:\n%s", name, args, want, errOut)
				}
			}
		}
	}
	if diff := cmp.Diff(before, bucketKeys(t, b)); diff != "" {
		t.Errorf("objects changed by refused commands (-before +after):\n%s", diff)
	}
	// --uid picks one.
	code, out, errOut := runCmd(t, "captured-packets", "copy", "--direct", "gone", "-n", ns, "--kubeconfig", k.Kubeconfig, "--uid", uidB, "-q", "-d", t.TempDir())
	if code != exitOK || !strings.Contains(out, "downloaded 1 objects") {
		t.Errorf("copy --uid = %d %q %q", code, out, errOut)
	}
}

// copy --merge over more objects than it may open at once (the bound
// lowered to 4, 10 objects) writes the time-ordered merge of them all,
// byte for byte; an output it cannot write fails before any download.
func TestCapturedPacketsMergeBounded(t *testing.T) {
	b := s3Bucket(t, "CAPSTREAM_S3_ACCESSKEY", "CAPSTREAM_S3_SECRETKEY")
	t.Setenv("KUBECONFIG", unreachableKubeconfig(t))
	defer func(n int) { mergeFanIn = n }(mergeFanIn)
	mergeFanIn = 4
	t0 := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC).UnixNano()
	dir := schemas.CaptureDir("capstream", "ns1", "cap", "u1")
	type obj struct {
		key   string
		first int64
		data  []byte
	}
	var objs []obj
	for i := range 10 {
		// Interleaved over three nodes, with equal times across objects.
		first := t0 + int64(i%4)*1e9
		key := fmt.Sprintf("%snode-%d/p_cali%d/%s-%d.pcap", dir, i%3, i, time.Unix(0, first).UTC().Format("20060102T150405.000000000Z"), i+1)
		objs = append(objs, obj{key, first, putPcap(t, b, key, first, first+int64(i)*1e8, first+5e9)})
	}
	// The order copy merges in: first packet, then key.
	sort.Slice(objs, func(i, j int) bool {
		if objs[i].first != objs[j].first {
			return objs[i].first < objs[j].first
		}
		return objs[i].key < objs[j].key
	})
	var inputs []pcapmerge.Input
	for _, o := range objs {
		inputs = append(inputs, pcapmerge.Input{Name: o.key, Reader: bytes.NewReader(o.data)})
	}
	var want bytes.Buffer
	if _, err := pcapmerge.Merge(&want, inputs); err != nil {
		t.Fatal(err)
	}
	mdir := t.TempDir()
	code, out, errOut := runCmd(t, "captured-packets", "copy", "--direct", "cap", "-n", "ns1", "--merge", "-q", "-d", mdir)
	if code != exitOK || !strings.Contains(out, "merged 10 objects, 30 packets") {
		t.Fatalf("copy --merge = %d %q %q", code, out, errOut)
	}
	got, err := os.ReadFile(filepath.Join(mdir, "ns1_cap.pcap"))
	if err != nil || !bytes.Equal(got, want.Bytes()) {
		t.Errorf("merged file (%d bytes, %v) differs from the time-ordered merge (%d bytes)", len(got), err, want.Len())
	}
	if entries, _ := os.ReadDir(mdir); len(entries) != 1 {
		t.Errorf("merge left %d entries, want only the merged pcap", len(entries))
	}

	// Outputs it cannot write: refused with exit 2, nothing downloaded.
	taken := t.TempDir()
	if err := os.Mkdir(filepath.Join(taken, "ns1_cap.pcap"), 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "a-file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for name, d := range map[string]string{"output is a directory": taken, "-d is a file": file} {
		t.Run(name, func(t *testing.T) {
			code, out, errOut := runCmd(t, "captured-packets", "copy", "--direct", "cap", "-n", "ns1", "--merge", "-d", d)
			if code != exitUsage || out != "" || strings.Contains(errOut, "download:") {
				t.Errorf("copy --merge -d %s = %d %q %q, want exit 2 before any download", d, code, out, errOut)
			}
		})
	}
	if entries, _ := os.ReadDir(taken); len(entries) != 1 {
		t.Errorf("a refused merge left %d entries, want only the directory that was there", len(entries))
	}
}
