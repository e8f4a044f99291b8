package schemas

import (
	"crypto/sha1"
	"encoding/hex"
)

// InterfaceHashDigits is how many hex digits of the hash Calico's interface
// names carry.
const InterfaceHashDigits = 11

// InterfaceName is Calico's host-side veth name for a pod: prefix plus the
// first 11 hex digits of sha1("<namespace>.<pod>"). The router names the
// interfaces it tells producers to capture with it, and the demo's
// simulated node and the test harness name the veths they build with it,
// so the two always agree.
func InterfaceName(prefix, namespace, pod string) string {
	sum := sha1.Sum([]byte(namespace + "." + pod))
	return prefix + hex.EncodeToString(sum[:])[:InterfaceHashDigits]
}
