package devstack

import (
	"os/exec"
	"runtime"
	"sync"
)

// Children must never outlive the supervisor, whatever ends it (kill -9 included). On Linux each
// child is started with a parent-death signal (SIGKILL, see procattr_linux.go). The kernel sends
// it when the *thread* that forked the child exits, not when the process does; Go parks idle
// threads and reuses them, but terminates a thread whose goroutine exits while locked to it
// (runtime.LockOSThread), and any goroutine may run on any thread. A child forked from an
// ordinary goroutine could therefore be killed long before the supervisor ends. So every child is
// forked from one goroutine that locks its thread and never returns: that thread lives exactly as
// long as the process, and its death is the process's death.
var spawner struct {
	once sync.Once
	reqs chan spawnReq
}

type spawnReq struct {
	cmd  *exec.Cmd
	done chan error
}

// StartCmd starts cmd as the supervisor starts its children: in a process group of its own and
// SIGKILLed by the kernel when this process dies, however it dies (bench/ runs its processes so,
// without supervising them).
func StartCmd(cmd *exec.Cmd) error { return startCmd(cmd) }

// startCmd starts cmd on the spawner thread and returns cmd.Start's error. Safe for concurrent use.
func startCmd(cmd *exec.Cmd) error {
	spawner.once.Do(func() {
		spawner.reqs = make(chan spawnReq)
		ready := make(chan struct{})
		// Owned by the process: it must not exit (its thread's exit would kill every child).
		go func() {
			runtime.LockOSThread()
			close(ready)
			for r := range spawner.reqs {
				r.done <- r.cmd.Start()
			}
		}()
		<-ready
	})
	setProcAttr(cmd)
	done := make(chan error, 1)
	spawner.reqs <- spawnReq{cmd: cmd, done: done}
	return <-done
}
