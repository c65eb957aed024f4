// Package testutil holds helpers that tests in several packages share: free loopback ports,
// polling with a deadline, and a real MinIO server for S3 tests.
package testutil

import (
	"fmt"
	"math/rand/v2"
	"net"
	"testing"
	"time"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago. Used where a port has
// to be named before the process that binds it starts (a child process, MinIO).
//
// Ports come from below Linux's ephemeral range (32768+ by default): a port the kernel hands
// out for port 0 can be taken by any outgoing connection before the child binds it, while
// these are only ever taken by another test choosing the same one by chance.
func FreePort(t testing.TB) int {
	t.Helper()
	for range 1000 {
		port := 20000 + rand.IntN(12000)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		l.Close()
		return port
	}
	t.Fatal("no free port found in 20000-31999")
	return 0
}

// Eventually polls cond every interval until it returns nil or the deadline passes, then
// fails the test with the last error. Tests use it instead of sleeping.
func Eventually(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = cond(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %v", timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
