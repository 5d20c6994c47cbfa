package statekv

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// faultProxy is a TCP proxy between a component and the broker that injects network faults on
// demand: it can swallow what the client sends (a link that went dead in the client→broker
// direction: the bytes are counted and never delivered), hold it (a stalled link: the bytes are
// counted and delivered, in order, on release), and cut every connection, refusing new ones
// (accepted and closed at once) until restored.
type faultProxy struct {
	t      *testing.T
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu        sync.Mutex // guards the fields below
	swallow   bool
	hold      bool
	swallowed int                 // bytes swallowed or held since the last swallowClient/holdClient
	held      map[net.Conn][]byte // held bytes, by destination
	refuse    bool
	conns     map[net.Conn]struct{}
	closed    bool
}

// startFaultProxy listens on 127.0.0.1:0 and forwards to target; t.Cleanup closes it and waits
// for its goroutines.
func startFaultProxy(t *testing.T, target string) *faultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &faultProxy{t: t, ln: ln, target: target, conns: map[net.Conn]struct{}{}, held: map[net.Conn][]byte{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *faultProxy) url() string { return "mqtt://" + p.ln.Addr().String() }

func (p *faultProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		refuse := p.refuse || p.closed
		p.mu.Unlock()
		if refuse {
			_ = c.Close()
			continue
		}
		b, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		if p.refuse || p.closed {
			p.mu.Unlock()
			_ = c.Close()
			_ = b.Close()
			continue
		}
		p.conns[c], p.conns[b] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pump(b, c, true)
		go p.pump(c, b, false)
	}
}

// pump copies src to dst; fromClient marks the direction that swallow affects.
func (p *faultProxy) pump(dst, src net.Conn, fromClient bool) {
	defer p.wg.Done()
	defer func() {
		_ = src.Close()
		_ = dst.Close()
		p.mu.Lock()
		delete(p.conns, src)
		delete(p.conns, dst)
		p.mu.Unlock()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && fromClient {
			// Decided and written under the lock, so that release delivers held bytes before any
			// later ones.
			p.mu.Lock()
			var werr error
			switch {
			case p.swallow:
				p.swallowed += n
			case p.hold:
				p.swallowed += n
				p.held[dst] = append(p.held[dst], buf[:n]...)
			default:
				_, werr = dst.Write(buf[:n])
			}
			p.mu.Unlock()
			if werr != nil {
				return
			}
		} else if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				p.t.Logf("fault proxy: %v", err)
			}
			return
		}
	}
}

// swallowClient starts swallowing what clients send; swallowedBytes counts it.
func (p *faultProxy) swallowClient() {
	p.mu.Lock()
	p.swallow, p.swallowed = true, 0
	p.mu.Unlock()
}

// holdClient starts holding what clients send, until release; swallowedBytes counts it.
func (p *faultProxy) holdClient() {
	p.mu.Lock()
	p.hold, p.swallowed = true, 0
	p.mu.Unlock()
}

// release delivers what was held and forwards again.
func (p *faultProxy) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hold = false
	for dst, b := range p.held {
		if _, err := dst.Write(b); err != nil {
			p.t.Logf("fault proxy: release: %v", err)
		}
		delete(p.held, dst)
	}
}

func (p *faultProxy) swallowedBytes() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.swallowed
}

// cut closes every proxied connection and refuses new ones until restore.
func (p *faultProxy) cut() {
	p.mu.Lock()
	p.refuse = true
	clear(p.held)
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
}

// restore forwards again, in both directions, for new connections.
func (p *faultProxy) restore() {
	p.mu.Lock()
	p.refuse, p.swallow, p.hold = false, false, false
	clear(p.held)
	p.mu.Unlock()
}

func (p *faultProxy) close() {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	_ = p.ln.Close()
	p.wg.Wait()
}
