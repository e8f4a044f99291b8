// Package netns runs code inside another network namespace and builds
// Calico-style nodes out of them. It is the one implementation of the
// thread-locked setns dance that the producer's AF_PACKET source, the
// demo's simulated node and the test harness share, and of the veth wiring
// (AddNode, AddVeth: iproute2 commands) the last two build; it imports
// nothing but the standard library and x/sys, so the producer can use it
// without pulling in Kubernetes libraries. It holds no state: namespaces it
// creates belong to the caller, who deletes them.
package netns

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// Do runs fn inside the network namespace at path (such as
// /var/run/netns/NAME) on a locked OS thread. Sockets fn opens stay in that
// namespace after Do returns.
func Do(path string, fn func() error) error {
	errc := make(chan error, 1)
	// A fresh goroutine owns the switched thread; if switching back fails
	// the thread stays locked and exits with the goroutine.
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- fmt.Errorf("open own netns: %w", err)
			return
		}
		defer orig.Close()
		target, err := os.Open(path)
		if err != nil {
			errc <- fmt.Errorf("open netns %s: %w", path, err)
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", path, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("leave netns %s: %w", path, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
