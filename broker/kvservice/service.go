package kvservice

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqdapr/mqdapr/broker"
	"github.com/mqdapr/mqdapr/broker/statestore"
)

// Options configure a Service.
type Options struct {
	// Engine is the key-value store served; required. The Service does not close it.
	Engine *statestore.Engine
	// Now is the clock passed to Engine.Expire; it must be the engine's own (statestore
	// Options.Now). nil means time.Now.
	Now func() time.Time
	// PublishTimeout bounds the publishing of one expiry notification; 0 means 10 s.
	PublishTimeout time.Duration
	// Logger receives failures that cannot be reported to a client; nil discards.
	Logger *slog.Logger
}

// Service is a broker.Service serving the state store request topic. Create it with New, pass it in
// broker.Options.Services, and call Start with the started broker to drive TTL expiry. Its methods
// are safe for concurrent use.
type Service struct {
	engine     *statestore.Engine
	now        func() time.Time
	pubTimeout time.Duration
	log        *slog.Logger

	wake    chan struct{}   // capacity 1: the next deadline may have moved earlier
	ctx     context.Context // cancelled by Close; bounds the expiry goroutine and its publishes
	cancel  context.CancelFunc
	mu      sync.Mutex // guards started and the wg.Add of Start against Close
	started bool
	closed  atomic.Bool
	wg      sync.WaitGroup // the expiry goroutine
}

// New validates opts and returns a Service. It does no I/O and starts no goroutine.
func New(opts Options) (*Service, error) {
	if opts.Engine == nil {
		return nil, fmt.Errorf("%w: Engine is required", ErrInvalidOptions)
	}
	if opts.PublishTimeout < 0 {
		return nil, fmt.Errorf("%w: PublishTimeout %s must be >= 0 (0: 10s)", ErrInvalidOptions, opts.PublishTimeout)
	}
	s := &Service{
		engine:     opts.Engine,
		now:        opts.Now,
		pubTimeout: opts.PublishTimeout,
		log:        opts.Logger,
		wake:       make(chan struct{}, 1),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if s.now == nil {
		s.now = time.Now
	}
	if s.pubTimeout == 0 {
		s.pubTimeout = 10 * time.Second
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s, nil
}

// ClientDisconnected drops the client's KEYNOTIFY registrations when its connection ends
// (spec §1.7: nothing is kept or queued while the client is away). It implements
// broker.ClientObserver.
func (s *Service) ClientDisconnected(clientID string) { s.engine.ClientDisconnected(clientID) }

// Match reports whether topic is the state store request topic (spec §1.1).
func (s *Service) Match(topic string) bool { return s.engine.Match(topic) }

// Handle serves one request PUBLISH: it runs the command and publishes the response to the
// request's Response Topic, then the KEYNOTIFY notifications, through pub. It blocks until they are
// queued for their subscribers (the broker acknowledges the request only after Handle returns).
//
// Requests the protocol does not answer (QoS other than 1, no Response Topic, no Correlation Data;
// spec §1.1, §1.2) return a *broker.ReasonError with code 0x83 naming the fault; a forbidden
// Response Topic returns a *broker.DisconnectError (0x82 protocol error): the broker disconnects the
// client, as the spec asks. A response that cannot be queued returns the Publisher's error (the command has
// been applied all the same); notifications that cannot be queued are logged.
func (s *Service) Handle(ctx context.Context, clientID string, msg *broker.Message, pub broker.Publisher) error {
	if s.closed.Load() {
		return &broker.ReasonError{Code: broker.CodeUnspecifiedError, Reason: ErrClosed.Error()}
	}
	res, err := s.engine.Handle(ctx, toRequest(clientID, msg))
	if err != nil {
		if errors.Is(err, statestore.ErrClosed) {
			return &broker.ReasonError{Code: broker.CodeUnspecifiedError, Reason: err.Error()}
		}
		if errors.Is(err, statestore.ErrForbiddenResponseTopic) {
			return &broker.DisconnectError{ReasonError: broker.ReasonError{Code: broker.CodeProtocolError, Reason: err.Error()}}
		}
		return &broker.ReasonError{Code: broker.CodeImplementationSpecificError, Reason: err.Error()}
	}
	s.poke()
	if err := pub.Publish(ctx, fromMessage(res.Response)); err != nil {
		s.publishNotifications(ctx, pub, res.Notifications)
		return fmt.Errorf("kvservice: publishing the response to %q: %w", res.Response.Topic, err)
	}
	s.publishNotifications(ctx, pub, res.Notifications)
	return nil
}

func (s *Service) publishNotifications(ctx context.Context, pub broker.Publisher, notes []statestore.Message) {
	for _, n := range notes {
		if err := pub.Publish(ctx, fromMessage(n)); err != nil {
			s.log.Warn("state store: a key notification could not be queued", "topic", n.Topic, "err", err)
		}
	}
}

// poke tells the expiry goroutine to re-read the next deadline.
func (s *Service) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Start begins TTL expiry: a goroutine, stopped by Close, calls Engine.Expire at each
// Engine.NextDeadline and publishes the DELETE notifications through pub (normally the started
// *broker.Broker). It returns ErrAlreadyStarted on a second call and ErrClosed after Close.
func (s *Service) Start(pub broker.Publisher) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return ErrClosed
	}
	if s.started {
		return ErrAlreadyStarted
	}
	s.started = true
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.expireLoop(pub)
	}()
	return nil
}

// expireLoop sleeps until the engine's next deadline (or a poke), then expires due keys.
func (s *Service) expireLoop(pub broker.Publisher) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		var fire <-chan time.Time
		if d, ok := s.engine.NextDeadline(); ok {
			timer.Reset(max(d.Sub(s.now()), 0))
			fire = timer.C
		} else {
			timer.Stop()
		}
		select {
		case <-s.ctx.Done():
			return
		case <-s.wake:
		case <-fire:
			s.expire(pub)
		}
	}
}

func (s *Service) expire(pub broker.Publisher) {
	ctx, cancel := context.WithTimeout(s.ctx, s.pubTimeout)
	defer cancel()
	s.publishNotifications(ctx, pub, s.engine.Expire(ctx, s.now()))
}

// Close stops the expiry goroutine and waits for it; later requests are refused with 0x80. It does
// not close the Engine. Idempotent.
func (s *Service) Close() error {
	s.mu.Lock()
	s.closed.Store(true)
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	return nil
}
