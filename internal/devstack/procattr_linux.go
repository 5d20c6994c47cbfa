package devstack

import (
	"os/exec"
	"syscall"
)

// setProcAttr puts the child in its own process group (Ctrl-C in the terminal reaches only the
// supervisor, which stops the processes in order: daprd before the components, the broker last)
// and makes the kernel SIGKILL it when the supervisor dies (see spawn.go). SIGKILL, not SIGTERM:
// a child that is slow or stuck in its SIGTERM handling must not survive either, and every part is
// crash-safe (the broker's store, the components' persistent sessions); the orderly stop with
// SIGTERM is the supervisor's own job for every ending it can see (signals, a broken output).
// Go's fork checks getppid after setting the signal, so a supervisor that dies during the fork
// is covered too.
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
