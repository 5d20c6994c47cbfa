package pubsubmqtt5

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// dispatcher runs message handlers on bounded goroutines, off paho's single receive goroutine.
//
// At most `slots` messages are being handled at once, whatever the broker sends (Mosquitto 2.0.11
// exceeds Receive Maximum after the first PUBACK): extra messages wait, unacknowledged, in their
// lane. Messages with the same ordering key (their topic, or the orderingKeyFrom) share a lane and are
// handled one at a time in receive order, whichever partition stream they go to; with ordering
// "none" every message has a lane of its own.
type dispatcher struct {
	slots    chan struct{}
	ordering string
	seq      atomic.Uint64

	mu       sync.Mutex // guards lanes and stopping
	lanes    map[string][]*inbound
	stopping bool

	quit chan struct{} // closed when stop begins: no new handler calls, waits and backoffs end
	// hard is cancelled when the shutdown grace is over: running handler calls are abandoned.
	hard       context.Context
	hardCancel context.CancelFunc
	wg         sync.WaitGroup
	work       sync.WaitGroup // running handler calls
}

func newDispatcher(slots int, ordering string) *dispatcher {
	d := &dispatcher{
		slots:    make(chan struct{}, slots),
		ordering: ordering,
		lanes:    map[string][]*inbound{},
		quit:     make(chan struct{}),
	}
	d.hard, d.hardCancel = context.WithCancel(context.Background())
	return d
}

// enqueue hands m to its lane without blocking (it runs on paho's receive goroutine). After stop
// it drops m on the floor without acknowledging it, so the broker keeps it for the next session.
func (d *dispatcher) enqueue(m *inbound, process func(*inbound)) {
	key := m.key
	if d.ordering == OrderingNone {
		key = "\x00" + strconv.FormatUint(d.seq.Add(1), 10)
	}
	d.mu.Lock()
	if d.stopping {
		d.mu.Unlock()
		return
	}
	if q, busy := d.lanes[key]; busy {
		d.lanes[key] = append(q, m)
		d.mu.Unlock()
		return
	}
	d.lanes[key] = nil
	d.wg.Add(1)
	d.mu.Unlock()
	go d.runLane(key, m, process)
}

// runLane handles m and then the rest of its lane, one message per acquired slot.
func (d *dispatcher) runLane(key string, m *inbound, process func(*inbound)) {
	defer d.wg.Done()
	for {
		select {
		case d.slots <- struct{}{}:
		case <-d.quit:
			d.dropLane(key)
			return
		}
		d.mu.Lock()
		if d.stopping {
			delete(d.lanes, key)
			d.mu.Unlock()
			<-d.slots
			return
		}
		d.work.Add(1) // under mu, so never concurrent with stop's Wait
		d.mu.Unlock()
		process(m)
		d.work.Done()
		<-d.slots

		d.mu.Lock()
		q := d.lanes[key]
		if len(q) == 0 || d.stopping {
			delete(d.lanes, key)
			d.mu.Unlock()
			return
		}
		m, d.lanes[key] = q[0], q[1:]
		d.mu.Unlock()
	}
}

func (d *dispatcher) dropLane(key string) {
	d.mu.Lock()
	delete(d.lanes, key)
	d.mu.Unlock()
}

// goOwned runs f on a goroutine the dispatcher waits for in stop.
func (d *dispatcher) goOwned(f func()) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopping {
		return
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		f()
	}()
}

// stopped is closed once stop begins.
func (d *dispatcher) stopped() <-chan struct{} { return d.quit }

// handlerContext derives the context of one handler call: it ends with the subscription stream or
// when the shutdown grace is over. Call the returned cancel when the call returns.
func (d *dispatcher) handlerContext(stream context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(stream)
	undo := context.AfterFunc(d.hard, cancel)
	return ctx, func() { undo(); cancel() }
}

// stop takes no new messages, lets running handlers finish for up to grace (their messages are
// acknowledged), abandons the rest unacknowledged, and waits for every goroutine to exit.
func (d *dispatcher) stop(grace time.Duration) {
	d.mu.Lock()
	if d.stopping {
		d.mu.Unlock()
		return
	}
	d.stopping = true
	close(d.quit)
	d.mu.Unlock()

	finished := make(chan struct{})
	go func() { d.work.Wait(); close(finished) }()
	timer := time.NewTimer(grace)
	select {
	case <-finished:
	case <-timer.C:
	}
	timer.Stop()
	d.hardCancel()
	d.wg.Wait()
	<-finished
}
