// Package schemas is the contract between capstream's processes: the router,
// the per-node producers and the sinks never import each other, so everything
// they must agree on lives here. That is the NATS subjects and their token
// mapping, the JetStream stream and consumer configurations, and the wire
// formats: the command and status JSON bodies and the packet batch (pcap
// records plus NATS headers).
//
// The package is passive: it opens no connection, starts no goroutine, logs
// nothing and holds no configuration; its only I/O is [EnsureStreams], which
// runs on a caller's JetStream context. It imports no other capstream package
// and nothing from k8s.io, so the producer and the sinks build without
// apimachinery.
//
// Every decoder validates what it returns. Errors caused by the payload wrap
// [ErrMalformed] (or [ErrUnknownVersion] for a version this build does not
// speak), so a consumer can Term such a message with one errors.Is check and
// retry everything else.
//
// Compatibility: within one [Version], fields are only ever added, and
// decoders ignore JSON fields they do not know, so an older process keeps
// reading a newer writer's messages. A change that an old reader would
// misinterpret bumps [Version].
package schemas

// Version is the wire version of the command, status and batch formats. It is
// written into every message (the "version" JSON field, the
// Capstream-Version header) and decoders reject any other value with
// [ErrUnknownVersion], so a rolling upgrade that changes a format fails loudly
// instead of being misread.
const Version = 1
