package mqttconn

import (
	"net"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/packets"
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
// runs. The bytes go out in the order they were appended, and a packet's bytes are appended
// together under the lock, so no packet is ever split by another (a writer may take the start of a
// packet still being appended; its end follows in the next write), nor written twice. What was
// appended is written at once (no timer, no added latency), except PUBACKs with deferAcks: they
// wait, at most deferAcks, for the next packet to take them along. A write error closes the
// connection, so paho's reader sees it; the bytes not written are dropped, never sent later.
type coalescingConn struct {
	net.Conn // never promotes *net.TCPConn's writeBuffers: net.Buffers goes through Write

	// deferAcks, if not zero, lets a PUBACK wait up to that long for the next packet (a request,
	// say) to go out in the same system call instead of being written by itself (set before use).
	deferAcks time.Duration

	pmu sync.Mutex // held from Lock to Unlock: one packet is being appended

	mu       sync.Mutex  // guards the fields below
	cond     sync.Cond   // on mu: broadcast when a write ends
	buf      []byte      // appended, not yet taken by a writer
	spare    []byte      // the previous batch's buffer, for reuse
	appended uint64      // bytes appended so far
	pktStart uint64      // where the packet being appended starts (in appended bytes)
	written  uint64      // bytes taken by writes that ended (written, or failed)
	writing  bool        // a goroutine is in the write system call
	timer    *time.Timer // writes held PUBACKs after deferAcks; nil until first needed
	armed    bool        // timer is running
	err      error       // the first write error; every later write fails with it
}

// maxSpare bounds the batch buffer kept for reuse.
const maxSpare = 64 << 10

func newCoalescingConn(c net.Conn) *coalescingConn {
	cc := &coalescingConn{Conn: c}
	cc.cond.L = &cc.mu
	return cc
}

// Lock starts a packet (sync.Locker, for paho).
func (c *coalescingConn) Lock() {
	c.pmu.Lock()
	c.mu.Lock()
	c.pktStart = c.appended
	c.mu.Unlock()
}

// Write appends p to the pending bytes of the packet being written; Unlock writes them. It must be
// called between Lock and Unlock, as packets.ControlPacket.WriteTo does for every packet paho sends.
func (c *coalescingConn) Write(p []byte) (int, error) {
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
// failed), or, for a PUBACK with deferAcks, once the timer that writes it is set.
func (c *coalescingConn) Unlock() {
	c.mu.Lock()
	end := c.appended
	// (A writer may have taken the start of this packet already: then it is not held back.)
	if n := int(end - c.pktStart); c.deferAcks > 0 && n > 0 && n <= len(c.buf) && c.err == nil {
		if first := c.buf[len(c.buf)-n]; first>>4 == packets.PUBACK {
			if !c.armed {
				c.armed = true
				if c.timer == nil {
					c.timer = time.AfterFunc(c.deferAcks, c.flushHeld)
				} else {
					c.timer.Reset(c.deferAcks)
				}
			}
			c.pmu.Unlock()
			c.mu.Unlock()
			return
		}
	}
	c.pmu.Unlock() // the next packet may be appended while this one is written
	c.flushLocked(end)
	c.mu.Unlock()
}

// flushHeld writes the PUBACKs that no packet took along within deferAcks.
func (c *coalescingConn) flushHeld() {
	c.mu.Lock()
	c.armed = false
	c.flushLocked(c.appended)
	c.mu.Unlock()
}

// flushLocked returns, with mu held, once every byte up to end is written (or the connection
// failed): it writes what is pending itself unless another goroutine is writing, which it waits
// for.
func (c *coalescingConn) flushLocked(end uint64) {
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
}

// closeFlushTimeout bounds how long Close waits for what is pending (a DISCONNECT, held PUBACKs)
// to be written.
const closeFlushTimeout = time.Second

// Close writes what is pending, within closeFlushTimeout, then closes the connection.
func (c *coalescingConn) Close() error {
	c.mu.Lock()
	if c.timer != nil {
		c.timer.Stop()
		c.armed = false
	}
	if c.written < c.appended && c.err == nil {
		_ = c.Conn.SetWriteDeadline(time.Now().Add(closeFlushTimeout))
		c.flushLocked(c.appended)
	}
	c.mu.Unlock()
	return c.Conn.Close()
}
