// Package depcheck holds no code: its test enforces the package boundaries
// of STYLE.md with `go list -deps`, so a forbidden import fails the build
// of the suite rather than a code review.
package depcheck
