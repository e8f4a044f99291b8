// Package depcheck holds no code: its tests enforce the package boundaries
// of CONTRIBUTING.md ("Layout") with `go list -deps`, so a forbidden import
// fails the suite rather than a code review, and keep the production binary
// (cmd/capstream) free of the embedded NATS server, the simulated node, the
// test services and the in-process pipeline.
package depcheck
