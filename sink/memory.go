package sink

import "fmt"

// DefaultMemoryLimit is both sinks' default soft memory limit for the Go
// runtime, in bytes: with the default budgets it keeps a sink under 256 MiB
// of RSS.
const DefaultMemoryLimit = 192 << 20

// ValidateMemoryLimit accepts 0 (none) or at least 64 MiB: below that the
// collector would run without pause at the default budgets.
func ValidateMemoryLimit(n int64) error {
	if n != 0 && n < 64<<20 {
		return fmt.Errorf("memoryLimit %d: want 0 (none) or at least 64 MiB", n)
	}
	return nil
}
