// Package broker is mqdapr's embedded MQTT v5 broker: sessions, routing, shared subscriptions and a
// durable store with group commit. Create one with New, start it with Start, stop it with Close.
package broker

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Broker is an MQTT v5 broker. Its methods are safe for concurrent use.
type Broker struct {
	opts   Options
	log    *slog.Logger
	stats  stats
	store  *committer
	memory bool // no data directory: nothing needs to wait for a commit

	closed    atomic.Bool
	started   atomic.Bool
	connSeq   atomic.Uint64 // the last ConnID given out
	stop      chan struct{}
	wg        sync.WaitGroup // accept loops, connections, janitor
	listeners []net.Listener
	ws        wsState      // WebSocket listeners (websocket.go)
	authLimit *authLimiter // nil: failed authentications are not limited
	authLog   logLimiter   // refusal lines of the Authenticator, rate-limited

	mu       sync.Mutex // guards everything below, and session/group/conn state marked as such
	sessions map[string]*session
	groups   map[string]*group // by name + "\x00" + filter
	index    *index
	retained map[string]*Message
	conns    map[*conn]bool
	seq      uint64
	// queuedBytes approximates the memory held by queued and in-flight entries (MaxQueuedBytes).
	queuedBytes int64
	orphans     []op // stored entries without an owner, found by restore

	// openStore opens the store of a data directory; nil means the log (tests wrap it to inject faults).
	openStore func(dir string) (backend, error)
}

// New validates opts and returns a broker that is not yet started; it does no I/O.
func New(opts *Options) (*Broker, error) {
	if opts == nil {
		opts = NewDefaultOptions()
	}
	if err := opts.validate(); err != nil {
		return nil, err
	}
	b := &Broker{
		opts: *opts, log: opts.Logger, stop: make(chan struct{}),
		sessions: map[string]*session{}, groups: map[string]*group{}, index: newIndex(),
		retained: map[string]*Message{}, conns: map[*conn]bool{},
	}
	if b.log == nil {
		b.log = slog.Default()
	}
	if burst, refill := opts.AuthFailureBurst, opts.AuthFailureRefill; burst >= 0 && opts.Authenticator != nil {
		if burst == 0 {
			burst = 10
		}
		if refill <= 0 {
			refill = time.Second
		}
		b.authLimit = newAuthLimiter(burst, refill)
	}
	return b, nil
}

// Start opens the store (loading durable state) and the listeners, and begins serving.
func (b *Broker) Start() error {
	if b.closed.Load() {
		return ErrClosed
	}
	if !b.started.CompareAndSwap(false, true) {
		return fmt.Errorf("%w: already started", ErrInvalidOptions)
	}
	var be backend = memBackend{}
	b.memory = b.opts.DataDir == ""
	if !b.memory {
		open := b.openStore
		if open == nil {
			open = func(dir string) (backend, error) { return openLog(dir) }
		}
		if err := prepareDataDir(b.opts.DataDir, b.log); err != nil {
			return err
		}
		bb, err := open(b.opts.DataDir)
		if err != nil {
			return err
		}
		be = bb
	}
	snap, err := be.load()
	if err != nil {
		_ = be.close()
		return fmt.Errorf("broker: load store: %w", err)
	}
	if err := b.restore(snap); err != nil {
		_ = be.close()
		return err
	}
	b.store = newCommitter(be, b.opts.CommitInterval)
	if len(b.orphans) > 0 {
		b.store.submit(b.orphans, nil)
		b.orphans = nil
	}
	if b.opts.Addr != "" {
		l, err := net.Listen("tcp", b.opts.Addr)
		if err != nil {
			b.Close()
			return fmt.Errorf("broker: listen on %q: %w", b.opts.Addr, err)
		}
		b.serve(l)
	}
	if b.opts.TLSConfig != nil && b.opts.TLSAddr != "" { // TLSConfig may be for WSSAddr only
		l, err := tls.Listen("tcp", b.opts.TLSAddr, b.opts.TLSConfig)
		if err != nil {
			b.Close()
			return fmt.Errorf("broker: listen for TLS on %q: %w", b.opts.TLSAddr, err)
		}
		b.serve(l)
	}
	if err := b.listenWebSockets(); err != nil {
		b.Close()
		return err
	}
	b.wg.Add(1)
	go b.janitor()
	b.log.Info("broker started", "addr", b.Addrs(), "data_dir", b.opts.DataDir)
	return nil
}

// Addrs returns the bound listener addresses: plain TCP first, then TLS, WebSocket, WebSocket over
// TLS (WebSocketAddrs gives the latter as URLs).
func (b *Broker) Addrs() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]string, 0, len(b.listeners))
	for _, l := range b.listeners {
		out = append(out, l.Addr().String())
	}
	return out
}

// Serve accepts MQTT connections on l (e.g. a custom listener) until Close.
func (b *Broker) Serve(l net.Listener) error {
	if b.closed.Load() || !b.started.Load() {
		return ErrClosed
	}
	b.serve(l)
	return nil
}

func (b *Broker) serve(l net.Listener) {
	b.mu.Lock()
	b.listeners = append(b.listeners, l)
	b.mu.Unlock()
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			nc, err := l.Accept()
			if err != nil {
				if b.closed.Load() || errors.Is(err, net.ErrClosed) {
					return
				}
				b.log.Warn("accept failed", "err", err)
				select {
				case <-b.stop:
					return
				case <-time.After(50 * time.Millisecond):
				}
				continue
			}
			if !b.startConn(nc) {
				return
			}
		}
	}()
}

// startConn serves nc on a new goroutine; false when the broker is closed.
func (b *Broker) startConn(nc net.Conn) bool {
	b.mu.Lock()
	if b.closed.Load() {
		b.mu.Unlock()
		nc.Close()
		return false
	}
	if len(b.conns) >= 2*b.opts.MaxConnections {
		// Connections that have not sent CONNECT yet are bounded too (twice the limit, so clients
		// that are being replaced or refused can still get a CONNACK).
		b.mu.Unlock()
		b.stats.refuse(CodeServerBusy)
		nc.Close()
		return true
	}
	c := newConn(b, nc)
	b.conns[c] = true
	b.wg.Add(1)
	b.mu.Unlock()
	go func() {
		defer b.wg.Done()
		c.serve()
		b.mu.Lock()
		delete(b.conns, c)
		b.mu.Unlock()
	}()
	return true
}

// Stats returns a snapshot of the counters.
func (b *Broker) Stats() Stats {
	st := b.stats.snapshot()
	if b.store != nil {
		st.StoreCommits = b.store.commits.Load()
		st.StoreOps = b.store.ops.Load()
		st.StoreCommitSeconds = b.store.latency.Snapshot()
	}
	b.mu.Lock()
	st.Sessions, st.Retained, st.QueuedBytes = len(b.sessions), len(b.retained), b.queuedBytes
	b.mu.Unlock()
	return st
}

// Close disconnects every client (DISCONNECT 0x8B), commits what is pending and closes the store.
// It waits for all the broker's goroutines and is idempotent.
func (b *Broker) Close() error {
	if !b.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(b.stop)
	b.mu.Lock()
	for _, l := range b.listeners {
		l.Close()
	}
	for c := range b.conns {
		c.closeWith(codePtr(CodeServerShuttingDown))
		c.cancel()
	}
	b.mu.Unlock()
	b.wg.Wait()
	if b.store != nil {
		b.store.close()
		return b.store.be.close()
	}
	return nil
}

// checkMessage says why the broker cannot take msg from embedding code (Publish, Deliver): the
// broker is not running, or the topic name or QoS is invalid.
func (b *Broker) checkMessage(msg *Message) error {
	if b.closed.Load() || !b.started.Load() {
		return ErrClosed
	}
	if !validTopicName(msg.Topic) {
		return fmt.Errorf("%w: %q", ErrInvalidTopic, msg.Topic)
	}
	if msg.QoS > 2 {
		return fmt.Errorf("%w: %d, want 0, 1 or 2", ErrInvalidQoS, msg.QoS)
	}
	return nil
}

// Publish routes msg like a client publish (Publisher for services and embedding code). It returns
// once msg is queued for every matching subscriber, durably with a data directory.
func (b *Broker) Publish(ctx context.Context, msg *Message) error {
	if err := b.checkMessage(msg); err != nil {
		return err
	}
	m := *msg
	m.stamp(time.Now())
	done := make(chan error, 1)
	b.publish(&m, nil, func(_ int, err error) { done <- err })
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// publish routes m, stamping its expiry time if not yet stamped, and calls done(matches, err) once the
// routing is durable. pre, if not nil, runs
// under b.mu after a successful routing and may add ops to the same commit.
func (b *Broker) publish(m *Message, pre func(ops *[]op), done func(int, error)) {
	b.stats.in(m.QoS)
	now := time.Now()
	// Client publishes are stamped on receipt; a will's Message Expiry Interval counts from its
	// publication (MQTT v5 §3.1.3.2.4), which is now.
	m.stamp(now)
	var ops []op
	b.mu.Lock()
	n, ents, err := b.route(m, now, &ops)
	if err != nil {
		b.mu.Unlock()
		done(0, err)
		return
	}
	if pre != nil {
		pre(&ops)
	}
	b.commitRouted(ents, now, ops, func(err error) { done(n, err) })
}

// commitRouted makes the routing of ents (with ops, its store changes) durable, then marks the
// entries committed and lets their sessions send them; done(err) follows, without b.mu. In memory
// nothing waits. Called with b.mu held, which it releases.
func (b *Broker) commitRouted(ents []*entry, now time.Time, ops []op, done func(error)) {
	sessions := b.touched(ents)
	if b.memory {
		for _, s := range sessions {
			b.pump(s, now, &ops)
		}
		b.mu.Unlock()
		done(nil)
		return
	}
	b.store.submit(ops, func(err error) {
		if err != nil {
			// The publisher is told (0x80) and may retry; the entries are still delivered from memory
			// rather than stalling their sessions.
			b.log.Error("store commit failed", "err", err)
		}
		b.mu.Lock()
		var ops2 []op
		for _, e := range ents {
			e.committed = true
		}
		for _, s := range sessions {
			b.pump(s, time.Now(), &ops2)
		}
		if len(ops2) > 0 {
			b.store.submitLazy(ops2) // packet ids of QoS 1 messages sent: a crash only resends them
		}
		b.mu.Unlock()
		done(err)
	})
	b.mu.Unlock()
}

// touched returns the sessions that may now send some of ents: their owners, or a group's
// connected members.
func (b *Broker) touched(ents []*entry) []*session {
	seen := map[*session]bool{}
	var out []*session
	add := func(s *session) {
		if s != nil && s.conn != nil && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	for _, e := range ents {
		if e.group != nil {
			for _, mem := range e.group.members {
				add(mem.sess)
			}
		}
	}
	for _, e := range ents {
		add(e.sess)
	}
	return out
}

// janitor expires sessions and sends delayed wills.
func (b *Broker) janitor() {
	defer b.wg.Done()
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case now := <-t.C:
			b.expire(now)
		}
	}
}

func (b *Broker) expire(now time.Time) {
	var wills []*Message
	var ops []op
	b.mu.Lock()
	for id, s := range b.sessions {
		if s.conn != nil {
			continue
		}
		if !s.willAt.IsZero() && !now.Before(s.willAt) {
			wills = append(wills, s.will.msg) // [MQTT-3.1.3-9]
			s.will, s.willAt = nil, time.Time{}
			if s.persistent {
				ops = append(ops, op{kind: opPutSession, owner: s.id, val: s.record()})
			}
		}
		if s.expiry != 0xFFFFFFFF && !s.offlineAt.IsZero() && now.Sub(s.offlineAt) >= time.Duration(s.expiry)*time.Second {
			if s.will != nil && !s.willAt.IsZero() {
				wills = append(wills, s.will.msg) // session end sends a pending will [MQTT-3.1.3-9]
			}
			b.endSession(s, &ops)
			delete(b.sessions, id)
		}
	}
	if len(ops) > 0 {
		b.store.submit(ops, nil)
	}
	b.mu.Unlock()
	for _, w := range wills {
		b.publish(w, nil, func(int, error) {})
	}
}

// restore rebuilds sessions, subscriptions, groups, queues and retained messages from snap.
func (b *Broker) restore(snap *snapshot) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for topic, v := range snap.retained {
		d := &decoder{b: v}
		m := d.message()
		if d.err != nil {
			return fmt.Errorf("broker: retained %q: %w", topic, d.err)
		}
		b.retained[topic] = m
	}
	for id, v := range snap.sessions {
		var rec sessionRecord
		if err := json.Unmarshal(v, &rec); err != nil {
			return fmt.Errorf("broker: session %q: %w", id, err)
		}
		s := newSession(id)
		s.expiry, s.persistent, s.nextPID, s.v3, s.owner = rec.Expiry, true, rec.NextPID, rec.V3, rec.Owner
		s.offlineAt = time.Now()
		if rec.OfflineAt != 0 {
			s.offlineAt = time.Unix(0, rec.OfflineAt)
		}
		if rec.Will != nil {
			d := &decoder{b: rec.Will}
			if m := d.message(); d.err == nil {
				// Its connection ended with the restart (or earlier): the will is due after its delay.
				s.will = &will{msg: m, delay: rec.WillDelay}
				s.willAt = s.offlineAt.Add(min(rec.WillDelay, time.Duration(s.expiry)*time.Second))
			}
		}
		for pid := range snap.inbound[id] {
			s.inbound[pid] = true
		}
		b.sessions[id] = s
		for _, sub := range rec.Subs {
			sub.sess = s
			b.addSub(s, sub)
		}
	}
	defer func() {
		b.log.Info("state restored", "sessions", len(b.sessions), "groups", len(b.groups),
			"messages", b.stats.Queued.Load(), "retained", len(b.retained))
	}()
	for owner, list := range snap.entries {
		sort.Slice(list, func(i, j int) bool { return list[i].seq < list[j].seq })
		var s *session
		var g *group
		switch owner[0] {
		case ownerSession:
			s = b.sessions[owner[1:]]
		case ownerGroup:
			if name, filter, ok := strings.Cut(owner[1:], "\x00"); ok {
				g = b.group(name, filter) // kept messages keep their group even without members
			}
		}
		for _, se := range list {
			b.seq = max(b.seq, se.seq)
			e, gk, err := decodeEntry(se.seq, se.val)
			if err != nil {
				return fmt.Errorf("broker: entry %d of %q: %w", se.seq, owner, err)
			}
			e.group = b.groups[gk]
			switch {
			case s != nil && e.state != stQueued:
				e.sess = s
				s.inflight = append(s.inflight, e)
				s.pids[e.pid] = e
			case s != nil:
				e.sess = s
				s.pushQueued(e)
			case g != nil:
				e.group, e.state, e.pid = g, stQueued, 0
				g.queue = append(g.queue, e)
			default:
				// Owner gone (its session record was never written): delete once the store runs.
				b.orphans = append(b.orphans, op{kind: opDelEntry, owner: owner, seq: e.seq})
				continue
			}
			b.account(e, 1)
		}
	}
	return nil
}
