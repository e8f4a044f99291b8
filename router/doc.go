// Package router turns PacketCapture resources into per-node capture
// commands on JetStream and writes the nodes' status back to the resources.
//
// The pieces, each in its own file:
//   - reconciler.go: the pure decision. Decide maps a capture, its
//     namespace and pods to one complete command per node; it does no I/O
//     and is unit-tested without a server.
//   - publisher.go: CAPSTREAM_COMMANDS as a last-value store. It remembers
//     the last command per subject (read back from the stream when a term
//     starts) and publishes only what differs, plus a stop for every node
//     that no longer has endpoints.
//   - reconcile.go: one capture's reconcile against the informer caches,
//     and the per-capture state the handlers use.
//   - candidates.go: the pod cache's endpoint label index and the pods a
//     reconcile evaluates its selector on: those its selector's
//     requirements allow, not the whole namespace.
//   - term.go: the Lease campaign and one leadership term (streams,
//     command replay, workqueues, status consumer).
//   - status.go: the status consumer and the status subresource writer.
//   - handlers.go: informer events to the captures they affect.
//   - validate.go: ValidatePacketCapture, shared with the CLI.
//
// Lifecycle: New checks the configuration and allocates; Run starts the
// informers, campaigns for a coordination.k8s.io Lease and, while leading,
// runs the workqueues and the status consumer. Every goroutine is started by
// Run and has ended when it returns; a cancelled context returns nil.
package router
