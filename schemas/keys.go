package schemas

import (
	"crypto/sha256"
	"encoding/hex"
)

// MaxKeySegment bounds one "/"-separated segment of an object key, in
// bytes. S3 servers that store objects as files (versitygw's posix
// backend, MinIO) refuse a segment longer than a file name may be (255
// bytes), and Kubernetes names reach 253 bytes before the pcap sink adds
// "_<interface>".
const MaxKeySegment = 255

// keyHashLen is how many hex digits of SHA-256 stand for the cut-off end
// of a long segment.
const keyHashLen = 16

// KeySegment returns s as one segment of an object key: s itself when it
// fits MaxKeySegment, otherwise its first bytes, "~" and 16 hex digits of
// the SHA-256 of the whole of s. Kubernetes names never hold "~", so a
// shortened segment never equals another name's; the full names are in
// the object's metadata and its pcap_objects row.
func KeySegment(s string) string { return Shorten(s, MaxKeySegment) }

// Shorten returns s when it is at most max bytes, otherwise its first
// max-17 bytes, "~" and 16 hex digits of the SHA-256 of s, which is max
// bytes. It bounds names that become object keys or file names. max must
// exceed 17.
func Shorten(s string, max int) string {
	if len(s) <= max {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	return s[:max-1-keyHashLen] + "~" + hex.EncodeToString(sum[:])[:keyHashLen]
}

// CaptureDir is the "directory" of one capture's pcap objects, with a
// trailing slash: <prefix>/<namespace>/<name>/<uid>/, each segment through
// KeySegment. The pcap sink writes under it and the CLI lists it, so both
// build it here. The UID keeps a capture deleted and re-created under the
// same name apart from its predecessor: their objects never share a
// directory, and each stays reachable by its UID. With uid empty it is the
// directory above, <prefix>/<namespace>/<name>/, which holds every UID that
// capture name ever had.
func CaptureDir(prefix, namespace, name, uid string) string {
	d := prefix + "/" + KeySegment(namespace) + "/" + KeySegment(name) + "/"
	if uid != "" {
		d += KeySegment(uid) + "/"
	}
	return d
}
