package kvservice

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
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

// ConnectionClosed drops the KEYNOTIFY registrations made on a connection when it ends
// (docs/state-store-protocol.md#notifications: nothing is kept or queued while the client is away),
// and only those: a registration made on the client's next connection survives however late the end
// of the previous one is reported. It implements broker.ConnectionObserver.
func (s *Service) ConnectionClosed(clientID string, id broker.ConnID) {
	s.engine.ConnectionClosed(clientID, uint64(id))
}

// Match reports whether topic is the state store request topic
// (docs/state-store-protocol.md#topics) or a topic under the notification prefix, where only the
// store publishes (Handle refuses client publishes there).
func (s *Service) Match(topic string) bool { return s.engine.Match(topic) || isNotifyTopic(topic) }

func isNotifyTopic(topic string) bool {
	return topic == statestore.NotifyTopicPrefix || strings.HasPrefix(topic, statestore.NotifyTopicPrefix+"/")
}

// Handle serves one request PUBLISH: it runs the command and publishes the response to the
// request's Response Topic through pub, then delivers each KEYNOTIFY notification to the connection
// that registered for it alone (pub must be a broker.Deliverer, as the broker is), whether or not
// that client subscribed to its notification topic, and to no other client through any filter. It
// blocks until they are queued (the broker acknowledges the request only after Handle returns). A
// watcher that is not connected on the registering connection any more gets nothing.
//
// A client PUBLISH under the notification prefix (a forged notification) is refused with a
// *broker.ReasonError carrying 0x87 not authorized, and goes nowhere.
//
// Requests the protocol does not answer (QoS other than 1, no Response Topic, no Correlation Data;
// docs/state-store-protocol.md#topics, #mqtt-properties) return a *broker.ReasonError with code
// 0x83 naming the fault; a forbidden Response Topic returns a *broker.DisconnectError (0x82
// protocol error): the broker disconnects the client, as the protocol asks. A response that cannot
// be queued returns the Publisher's error (the command has been applied all the same);
// notifications that cannot be queued are logged.
func (s *Service) Handle(ctx context.Context, clientID string, msg *broker.Message, pub broker.Publisher) error {
	ch := make(chan error, 1)
	if err := s.HandleAsync(ctx, clientID, msg, pub, func(err error) { ch <- err }); err != nil {
		return err
	}
	return <-ch
}

// HandleAsync is Handle for a broker.AsyncService: it returns what Handle returns when the request
// cannot be served (before anything is published), and otherwise nil, then calls done with
// Handle's result once the response and notifications are queued. With a statestore.BatchStore
// that is after the change the response reports (or any change the request could have observed)
// is durable, from the engine's group commit, so the connection's next requests are read, served
// and committed meanwhile, together with those of every other connection.
func (s *Service) HandleAsync(ctx context.Context, clientID string, msg *broker.Message, pub broker.Publisher, done func(error)) error {
	if isNotifyTopic(msg.Topic) {
		return &broker.ReasonError{Code: broker.CodeNotAuthorized, Reason: fmt.Sprintf(
			"topic %q is under the key notification prefix %q, where only the key-value store publishes",
			msg.Topic, statestore.NotifyTopicPrefix)}
	}
	if s.closed.Load() {
		return &broker.ReasonError{Code: broker.CodeUnspecifiedError, Reason: ErrClosed.Error()}
	}
	conn, _ := broker.ConnectionOf(ctx)
	req := toRequest(clientID, conn, msg)
	if c, ok := broker.ClientOf(ctx); ok {
		req.Username = c.Username
	}
	err := s.engine.Submit(ctx, req, func(res statestore.Result) {
		s.poke()
		if err := pub.Publish(ctx, fromMessage(res.Response)); err != nil {
			s.publishNotifications(ctx, pub, res.Notifications)
			done(fmt.Errorf("kvservice: publishing the response to %q: %w", res.Response.Topic, err))
			return
		}
		s.publishNotifications(ctx, pub, res.Notifications)
		done(nil)
	})
	if err != nil {
		if errors.Is(err, statestore.ErrClosed) {
			return &broker.ReasonError{Code: broker.CodeUnspecifiedError, Reason: err.Error()}
		}
		if errors.Is(err, statestore.ErrForbiddenResponseTopic) {
			return &broker.DisconnectError{ReasonError: broker.ReasonError{Code: broker.CodeProtocolError, Reason: err.Error()}}
		}
		return &broker.ReasonError{Code: broker.CodeImplementationSpecificError, Reason: err.Error()}
	}
	return nil
}

// publishNotifications delivers each notification to its watcher's registering connection alone.
// A watcher no longer on that connection is skipped (its registration ends with the connection).
func (s *Service) publishNotifications(ctx context.Context, pub broker.Publisher, notes []statestore.Message) {
	if len(notes) == 0 {
		return
	}
	d, ok := pub.(broker.Deliverer)
	if !ok {
		s.log.Error("state store: key notifications dropped", "count", len(notes), "err", ErrNoDeliverer)
		return
	}
	for _, n := range notes {
		err := d.Deliver(ctx, n.ClientID, broker.ConnID(n.Conn), fromMessage(n))
		switch {
		case errors.Is(err, broker.ErrNotConnected):
			s.log.Debug("state store: key notification for a connection that has ended", "client", n.ClientID, "topic", n.Topic)
		case err != nil:
			s.log.Warn("state store: a key notification could not be queued", "client", n.ClientID, "topic", n.Topic, "err", err)
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
// Engine.NextDeadline and delivers the DELETE notifications through pub (the started
// *broker.Broker). It returns ErrNoDeliverer when pub is not a broker.Deliverer, ErrAlreadyStarted
// on a second call and ErrClosed after Close.
func (s *Service) Start(pub broker.Publisher) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return ErrClosed
	}
	if _, ok := pub.(broker.Deliverer); !ok {
		return fmt.Errorf("%w: %T", ErrNoDeliverer, pub)
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
