package statekv

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/dapr/kit/logger"
	"github.com/eclipse/paho.golang/autopaho"
)

// subscriber (re)subscribes to the response topic after every connection, on a goroutine it owns,
// and lets Init wait for the first success.
type subscriber struct {
	r   *rpc
	log logger.Logger

	ctx    context.Context // cancelled by stop
	cancel context.CancelFunc
	wg     sync.WaitGroup

	once    sync.Once
	ready   chan struct{} // closed after the first successful subscription
	first   chan error    // capacity 1: the outcome of the first attempt, for Init
	mu      sync.Mutex    // guards last, stopped and wg.Add
	last    error
	stopped bool
}

func newSubscriber(r *rpc, log logger.Logger) *subscriber {
	ctx, cancel := context.WithCancel(context.Background())
	return &subscriber{r: r, log: log, ctx: ctx, cancel: cancel, ready: make(chan struct{}), first: make(chan error, 1)}
}

// connected is autopaho's OnConnectionUp for the connection l: it must not block, so the
// subscription runs on a goroutine; once it is in place, l is ready for requests (the session ends
// with every connection, so every connection subscribes).
func (s *subscriber) connected(cm *autopaho.ConnectionManager, l *link) {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		s.subscribe(cm, l)
	}()
}

// resubscribeEvery is how often a refused or failed subscription is tried again while its
// connection stays up (requests wait for it).
const resubscribeEvery = 5 * time.Second

func (s *subscriber) subscribe(cm *autopaho.ConnectionManager, l *link) {
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
		stop := context.AfterFunc(l.ctx, cancel)
		err := s.r.subscribe(ctx, cm)
		stop()
		cancel()
		if attempt == 0 {
			select {
			case s.first <- err: // only the first outcome stays; Init reads it
			default:
			}
		}
		if err == nil {
			s.r.subscribed(l)
			s.once.Do(func() { close(s.ready) })
			return
		}
		if l.ctx.Err() != nil || s.ctx.Err() != nil {
			return // the connection was lost meanwhile (the next one subscribes again), or stop
		}
		s.mu.Lock()
		s.last = err
		s.mu.Unlock()
		s.log.Errorf("mqttkv state: %v; requests wait for the subscription, retrying in %s", err, resubscribeEvery)
		t := time.NewTimer(resubscribeEvery)
		select {
		case <-t.C:
		case <-l.ctx.Done():
		case <-s.ctx.Done():
		}
		t.Stop()
	}
}

// wait blocks until the first subscription attempt ended (returning its error), ctx ends or
// timeout passes.
func (s *subscriber) wait(ctx context.Context, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-s.ready:
		return nil
	case err := <-s.first:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.last != nil {
			return s.last
		}
		return fmt.Errorf("%w: no subscription to the response topic within %s", ErrRequestFailed, timeout)
	}
}

// stop cancels a running subscription and waits for it.
func (s *subscriber) stop() {
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
}
