package testutil

import (
	"os"
	"syscall"
	"time"
)

// Stop sends sig to p unless done (closed when the process was reaped) is already closed, and
// waits for done; after grace it sends SIGKILL and waits again.
func Stop(p *os.Process, done <-chan struct{}, sig syscall.Signal, grace time.Duration) {
	if p == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	_ = p.Signal(sig)
	select {
	case <-done:
	case <-time.After(grace):
		_ = p.Kill()
		<-done
	}
}
