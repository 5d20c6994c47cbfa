// Package daprdwatch runs daprd as a child and restarts it, by ending, when one of its pluggable
// components restarts: daprd discovers and initialises the components on its sockets once, at
// start-up, and never re-initialises one that came back (every call then fails with "component
// not initialised"). It is the entrypoint of the daprd container in docker-compose.yaml, where
// the container runtime restarts a container only when its process exits: the watcher waits until
// every component answers Ping, starts daprd, watches the sockets, and when a component's socket is
// replaced (a new process serves it) or stops answering, stops daprd and exits non-zero, so that
// the runtime's restart policy starts the container again. It is static and needs no shell, so it
// works with the official daprd image (copied in through a volume, see cmd/daprd-watch).
package daprdwatch

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/mqdapr/mqdapr/internal/pluggable"
)

// Component is one pluggable component daprd uses: its unix socket and the building block whose
// Ping it answers.
type Component struct {
	Socket string
	Kind   pluggable.Kind
}

// ParseComponent reads "pubsub:<socket>" or "state:<socket>".
func ParseComponent(s string) (Component, error) {
	kind, socket, ok := strings.Cut(s, ":")
	if !ok || socket == "" {
		return Component{}, fmt.Errorf("component %q: want pubsub:<socket path> or state:<socket path>", s)
	}
	switch kind {
	case "pubsub":
		return Component{Socket: socket, Kind: pluggable.PubSub}, nil
	case "state":
		return Component{Socket: socket, Kind: pluggable.StateStore}, nil
	}
	return Component{}, fmt.Errorf("component %q: kind %q unknown, want pubsub or state", s, kind)
}

// ErrComponentRestarted is returned by Watch (and ends Run's daprd) when a component's socket was
// replaced or it stopped answering Ping.
var ErrComponentRestarted = errors.New("component restarted")

// identity tells one serving of a socket from the next: a restarted component removes the
// socket and creates a new one (components-go-sdk), which gets a new inode, or at least a new
// change time when the file system hands the freed inode out again.
type identity struct {
	dev, ino uint64
	ctime    int64
}

func socketIdentity(path string) (identity, fs.FileInfo, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return identity{}, nil, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return identity{}, fi, fmt.Errorf("%s: no inode information", path)
	}
	return identity{dev: uint64(st.Dev), ino: st.Ino, ctime: st.Ctim.Nano()}, fi, nil
}

// describe is the socket's owner and mode, for the log: the socket contract is that daprd's user
// may write to it (connecting to a unix socket needs write permission on the file).
func describe(fi fs.FileInfo) string {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return "mode=" + fi.Mode().String()
	}
	return fmt.Sprintf("uid=%d gid=%d mode=%s", st.Uid, st.Gid, fi.Mode())
}

// ping is one Ping of c, bounded by timeout. A refusal for lack of permission says what the
// socket contract wants.
func ping(ctx context.Context, c Component, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	_, err := pluggable.Ping(ctx, c.Socket, c.Kind)
	if err != nil && strings.Contains(err.Error(), "permission denied") {
		owner := "?"
		if _, fi, serr := socketIdentity(c.Socket); serr == nil {
			owner = describe(fi)
		}
		return fmt.Errorf("%s (%s): permission denied to uid %d gid %d: run the component as daprd's user (65532:65532 in mqdapr's images and the official daprd image): %w",
			c.Socket, owner, os.Getuid(), os.Getgid(), err)
	}
	return err
}

// Options tune Run; zero fields take the defaults of NewDefaultOptions.
type Options struct {
	Components  []Component
	Interval    time.Duration // between two checks of every socket
	Failures    int           // consecutive failed Pings that count as the component gone
	PingTimeout time.Duration // one Ping
	StopTimeout time.Duration // how long daprd has after SIGTERM before SIGKILL
	Log         *slog.Logger
}

// NewDefaultOptions: a check every 500 ms, gone after 3 failed Pings, daprd stopped within 30 s.
func NewDefaultOptions() Options {
	return Options{Interval: 500 * time.Millisecond, Failures: 3, PingTimeout: 2 * time.Second,
		StopTimeout: 30 * time.Second, Log: slog.Default()}
}

// WaitReady blocks until every component answers Ping, logging why not every 10 s (at once for a
// permission error), and returns each socket's identity then. It returns ctx's error when ctx ends
// first.
func WaitReady(ctx context.Context, o Options) ([]identity, error) {
	ids := make([]identity, len(o.Components))
	owners := make([]string, len(o.Components))
	lastLog := time.Time{}
	for {
		var failed error
		for i, c := range o.Components {
			if failed = ping(ctx, c, o.PingTimeout); failed != nil {
				break
			}
			var fi fs.FileInfo
			if ids[i], fi, failed = socketIdentity(c.Socket); failed != nil {
				break
			}
			owners[i] = describe(fi)
		}
		if failed == nil {
			for i, c := range o.Components {
				o.Log.Info("component ready", "socket", c.Socket, "owner", owners[i])
			}
			return ids, nil
		}
		if strings.Contains(failed.Error(), "permission denied") || time.Since(lastLog) >= 10*time.Second {
			o.Log.Warn("waiting for the components", "reason", failed)
			lastLog = time.Now()
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for the components: %w (last: %v)", ctx.Err(), failed)
		case <-time.After(o.Interval):
		}
	}
}

// Watch checks every component each Interval and returns an error wrapping ErrComponentRestarted,
// naming the socket and why, once a socket's identity differs from ids (a new process serves it)
// or its Ping failed Failures times in a row; or ctx's error when ctx ends first.
func Watch(ctx context.Context, o Options, ids []identity) error {
	failures := make([]int, len(o.Components))
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(o.Interval):
		}
		for i, c := range o.Components {
			if id, _, err := socketIdentity(c.Socket); err == nil && id != ids[i] {
				return fmt.Errorf("%w: %s was replaced (a new process serves it)", ErrComponentRestarted, c.Socket)
			}
			if err := ping(ctx, c, o.PingTimeout); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if failures[i]++; failures[i] >= o.Failures {
					return fmt.Errorf("%w: %s failed %d Pings in a row: %v", ErrComponentRestarted, c.Socket, failures[i], err)
				}
				continue
			}
			failures[i] = 0
		}
	}
}

// Run waits for the components, starts daprd (argv; its output is this process's), forwards the
// signals in sigs to it, and returns the exit code for this process: daprd's own when daprd ends
// (or was stopped by a forwarded signal), 3 when a component restarted and daprd was stopped for
// it, 4 when daprd could not be started, 5 when sigs ended the wait for the components.
func Run(o Options, argv []string, sigs <-chan os.Signal) int {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	signalled := make(chan bool, 1) // whether a signal ended the wait, once the waiter is gone
	go func() {
		select {
		case <-sigs: // before daprd runs: end the wait
			cancel()
			signalled <- true
		case <-ctx.Done():
			signalled <- false
		}
	}()
	ids, err := WaitReady(ctx, o)
	cancel()
	if <-signalled || err != nil {
		o.Log.Error("daprd not started", "err", err)
		return 5
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		o.Log.Error("starting daprd", "argv", argv, "err", err)
		return 4
	}
	o.Log.Info("daprd started", "pid", cmd.Process.Pid)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	restarted := make(chan error, 1)
	go func() { restarted <- Watch(wctx, o, ids) }()
	code := -1
	for code < 0 {
		select {
		case err := <-exited:
			return exitCode(o.Log, err)
		case sig := <-sigs:
			o.Log.Info("forwarding signal to daprd", "signal", sig)
			_ = cmd.Process.Signal(sig)
		case err := <-restarted:
			o.Log.Warn("stopping daprd so that it starts again and initialises the component", "reason", err)
			code = 3
		}
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(o.StopTimeout):
		o.Log.Warn("daprd did not stop after SIGTERM: killing it", "after", o.StopTimeout)
		_ = cmd.Process.Kill()
		<-exited
	}
	return code
}

// exitCode is daprd's exit status as this process's: its code, or 128+signal when a signal ended it.
func exitCode(log *slog.Logger, err error) int {
	var ee *exec.ExitError
	switch {
	case err == nil:
		log.Info("daprd exited", "code", 0)
		return 0
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			log.Info("daprd ended by a signal", "signal", ws.Signal())
			return 128 + int(ws.Signal())
		}
		log.Info("daprd exited", "code", ee.ExitCode())
		return ee.ExitCode()
	}
	log.Error("waiting for daprd", "err", err)
	return 4
}
