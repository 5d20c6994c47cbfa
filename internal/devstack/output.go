package devstack

import (
	"io"
	"sync"
)

// StopOnBrokenOutput wraps the supervisor's output (a terminal or a pipe). The first failed write
// (EPIPE: the reader of `make run | tee log` is gone; EIO: the terminal was closed) calls onBreak
// once, so that the stack is stopped in order, and every write after it is discarded: the stop
// must not die on its own log lines, and the processes' output must still be drained. For EPIPE
// to come back as an error rather than kill the process, the program must catch SIGPIPE
// (signal.Notify), as mqdapr-run does.
func StopOnBrokenOutput(w io.Writer, onBreak func(error)) io.Writer {
	return &breakWriter{w: w, onBreak: onBreak}
}

type breakWriter struct {
	mu      sync.Mutex // guards broken and serialises writes to w
	w       io.Writer
	broken  bool
	onBreak func(error)
}

func (b *breakWriter) Write(p []byte) (int, error) {
	b.mu.Lock()
	if b.broken {
		b.mu.Unlock()
		return len(p), nil
	}
	_, err := b.w.Write(p)
	if err == nil {
		b.mu.Unlock()
		return len(p), nil
	}
	b.broken = true
	b.mu.Unlock()
	b.onBreak(err)
	return len(p), nil
}
