// Package pluggable holds what the component commands share around components-go-sdk: the logger
// set-up and closing every instance the SDK created when the server stops (the SDK itself never
// calls Close, so without this a SIGTERM would skip the graceful shutdown).
package pluggable

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/dapr/kit/logger"
)

// NewLogger returns the component's logger; MQDAPR_LOG_LEVEL (debug, info, warn, error) sets its level.
func NewLogger(name string) logger.Logger {
	log := logger.NewLogger(name)
	if lvl := os.Getenv("MQDAPR_LOG_LEVEL"); lvl != "" {
		log.SetOutputLevel(logger.LogLevel(lvl))
	}
	return log
}

// List holds the component instances of one kind that the server created (one per Component
// name), in creation order: for closing them all at the end (Instances) and for summing their
// counters at a scrape (the components' metrics collectors).
type List[T any] struct {
	mu    sync.Mutex // guards items
	items []T
}

// Add records v and returns it, for use inside a server's factory.
func (l *List[T]) Add(v T) T {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.items = append(l.items, v)
	return v
}

// All returns the instances recorded so far.
func (l *List[T]) All() []T {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]T(nil), l.items...)
}

// Instances remembers the component instances the SDK creates, to close them (Finish).
type Instances = List[io.Closer]

// Track records c and returns it, for use inside an SDK factory.
func Track[T io.Closer](in *Instances, c T) T {
	in.Add(c)
	return c
}

// Finish closes every instance after the SDK server returned runErr, and exits non-zero when it
// was an error.
func Finish(log logger.Logger, in *Instances, runErr error) {
	for _, c := range in.All() {
		if err := c.Close(); err != nil {
			log.Warnf("closing component instance: %v", err)
		}
	}
	if runErr != nil {
		log.Errorf("component server stopped: %v", runErr)
		os.Exit(1)
	}
}

// CheckSocketFolder fails, naming the folder and what it needs, when the component registered as
// name could not create its socket (SocketPath): the folder is missing or not writable by this
// user. Called before the SDK's Run, which on that error logs it and then never returns
// (components-go-sdk v0.3.0: its cleanup waits for a goroutine the failed listen never started),
// leaving a process that serves nothing and does not exit.
func CheckSocketFolder(name string) error {
	socket := SocketPath(name)
	dir := filepath.Dir(socket)
	f, err := os.CreateTemp(dir, "."+name+"-probe-*")
	if err != nil {
		return fmt.Errorf("cannot create the socket %s: %w (the folder must exist and be writable by uid %d gid %d; set DAPR_COMPONENT_SOCKETS_FOLDER, or run as the folder's owner: 65532:65532 in mqdapr's images)",
			socket, err, os.Getuid(), os.Getgid())
	}
	f.Close()
	return os.Remove(f.Name())
}

// SocketUmask is the umask a component process runs with (PrepareSocket): its socket is created
// srwxrwx--- (connecting to a unix socket needs write permission on it, so daprd must run as the
// component's user or in its group), and every file it writes (the pub/sub's stateDir) is closed to
// other users. components-go-sdk v0.3.0 sets the umask to 0 in its package init, which left the
// socket srwxrwxrwx: any local user could call the component as daprd does.
const SocketUmask = 0o007

// PrepareSocket is the first thing a component command does: it sets SocketUmask, checks that
// the socket of the component registered as name can be created (CheckSocketFolder), and warns
// when the socket folder is writable by every user (another user could then put a socket of its
// own where daprd looks for the component's, while the component is not running).
func PrepareSocket(log logger.Logger, name string) error {
	syscall.Umask(SocketUmask)
	if err := CheckSocketFolder(name); err != nil {
		return err
	}
	dir := filepath.Dir(SocketPath(name))
	if fi, err := os.Stat(dir); err == nil && fi.Mode().Perm()&0o002 != 0 {
		log.Warnf("the socket folder %s is writable by every user (mode %v): another user could create a socket there in the component's place, which daprd would then connect to; make it 0750 or 0770, owned by the user or group of daprd and the components", dir, fi.Mode())
	}
	return nil
}
