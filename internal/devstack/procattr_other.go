//go:build !linux

package devstack

import (
	"os/exec"
	"syscall"
)

// setProcAttr puts the child in its own process group. Without Linux's parent-death signal a
// child outlives a supervisor killed with SIGKILL; the next start reports what it left (stale.go).
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}
