package schemas

import (
	"errors"
	"strconv"
)

// Sentinel errors. Decoders wrap them (sometimes several at once) with the
// field and position at fault; check them with errors.Is.
var (
	// ErrMalformed marks a payload that cannot be decoded or breaks a rule of
	// its format. Redelivering it cannot help: consumers Term it and count it.
	ErrMalformed = errors.New("malformed message")

	// ErrUnknownVersion marks a payload written for a format version this
	// build does not speak, typically during a rolling upgrade.
	ErrUnknownVersion = errors.New("unknown format version")

	// ErrInvalidName marks a string that cannot be a Kubernetes object name or
	// would not survive the mapping to a NATS subject token.
	ErrInvalidName = errors.New("invalid name")

	// ErrInvalidSubject marks a subject that does not have the shape of the
	// capstream subject it was parsed as.
	ErrInvalidSubject = errors.New("invalid subject")

	// ErrTruncated marks a batch body that ends in the middle of a record. It
	// is always wrapped together with ErrMalformed.
	ErrTruncated = errors.New("truncated record")
)

// quote renders untrusted input for an error message, bounded so that a
// hostile multi-megabyte value cannot blow up logs.
func quote(s string) string {
	const max = 64
	if len(s) > max {
		return strconv.Quote(s[:max]) + "..."
	}
	return strconv.Quote(s)
}
