package mqttconn

import (
	"net"
	"sync"
	"time"
)

// coalescingConn writes the packets that several goroutines send at the same time in one system
// call (write combining, like a group commit), instead of one writev per packet.
//
// paho writes a packet as net.Buffers between Lock and Unlock when the connection is a sync.Locker
// (packets.ControlPacket.WriteTo): Write only appends to the pending bytes, and Unlock, once the
// packet is complete, sees it written: if no write is under way it writes everything pending
// (its own packet and whatever others appended meanwhile) and goes on until its own packet is
// out; otherwise it waits for the goroutine writing, which takes the next batch with it. The lock
// around one packet is released before the write, so others append theirs while the system call
// runs. A packet is never written twice, nor split by another: on the wire every packet is
// whole, in the order the goroutines completed them, and what was appended is written at once (no
// timer, no added latency). A write error closes the connection, so paho's reader sees it; the
// bytes not written are dropped, never sent later.
type coalescingConn struct {
	net.Conn // never promotes *net.TCPConn's writeBuffers: net.Buffers goes through Write

	pmu sync.Mutex // held from Lock to Unlock: one packet is being appended

	mu       sync.Mutex // guards the fields below
	cond     sync.Cond  // on mu: broadcast when a write ends
	buf      []byte     // appended, not yet taken by a writer
	spare    []byte     // the previous batch's buffer, for reuse
	appended uint64     // bytes appended so far
	written  uint64     // bytes taken by writes that ended (written, or failed)
	writing  bool       // a goroutine is in the write system call
	err      error      // the first write error; every later write fails with it
}

// maxSpare bounds the batch buffer kept for reuse.
const maxSpare = 64 << 10

func newCoalescingConn(c net.Conn) *coalescingConn {
	cc := &coalescingConn{Conn: c}
	cc.cond.L = &cc.mu
	return cc
}

// Lock starts a packet (sync.Locker, for paho).
func (c *coalescingConn) Lock() { c.pmu.Lock() }

// Write appends p to the pending bytes of the packet being written; Unlock writes them. It must be
// called between Lock and Unlock, as packets.ControlPacket.WriteTo does for every packet paho sends.
func (c *coalescingConn) Write(p []byte) (int, error) { return c.append(p) }

func (c *coalescingConn) append(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	c.buf = append(c.buf, p...)
	c.appended += uint64(len(p))
	return len(p), nil
}

// Unlock ends a packet (sync.Locker): it returns once the packet is written (or the connection
// failed).
func (c *coalescingConn) Unlock() {
	c.mu.Lock()
	end := c.appended
	c.pmu.Unlock() // the next packet may be appended while this one is written
	for c.written < end && c.err == nil {
		if c.writing {
			c.cond.Wait()
			continue
		}
		c.writing = true
		b := c.buf
		c.buf, c.spare = c.spare[:0], nil
		c.mu.Unlock()
		_, err := c.Conn.Write(b)
		if err != nil {
			_ = c.Conn.Close() // paho's reader sees the loss; nothing pending is sent later
		}
		c.mu.Lock()
		c.written += uint64(len(b))
		if err != nil && c.err == nil {
			c.err = err
			c.written, c.buf = c.appended, nil
		}
		if cap(b) <= maxSpare && c.spare == nil {
			c.spare = b[:0]
		}
		c.writing = false
		c.cond.Broadcast()
	}
	c.mu.Unlock()
}

// closeFlushTimeout bounds how long Close waits for a write under way (a DISCONNECT, say) to end.
const closeFlushTimeout = time.Second

// Close waits, at most closeFlushTimeout, for a write under way, then closes the connection.
func (c *coalescingConn) Close() error {
	c.mu.Lock()
	if c.writing {
		_ = c.Conn.SetWriteDeadline(time.Now().Add(closeFlushTimeout))
		for c.writing {
			c.cond.Wait()
		}
	}
	c.mu.Unlock()
	return c.Conn.Close()
}
