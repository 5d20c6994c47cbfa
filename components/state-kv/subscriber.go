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
		ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
		defer cancel()
		stop := context.AfterFunc(l.ctx, cancel)
		defer stop()
		err := s.r.subscribe(ctx, cm)
		select {
		case s.first <- err: // only the first outcome stays; Init reads it
		default:
		}
		if err != nil && l.ctx.Err() != nil {
			return // the connection was lost meanwhile; the next one subscribes again
		}
		if err != nil {
			s.mu.Lock()
			s.last = err
			s.mu.Unlock()
			s.log.Errorf("mqttkv state: %v", err)
			return
		}
		s.r.subscribed(l)
		s.once.Do(func() { close(s.ready) })
	}()
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
