package broker

import (
	"context"
	"strings"
	"time"
)

// RecheckSubscriptions asks the Authorizer again about every subscription of every session whose
// user is known (connected, or kept with its owner), and removes those it refuses now, as an
// UNSUBSCRIBE would (a shared subscription's member leaves its group; its unacknowledged messages
// go back to the group). Call it after the rules changed (mqbroker does on an ACL reload): a
// grant withdrawn then stops deliveries at once instead of at the client's next SUBSCRIBE. MQTT has
// no way to tell the client; the removal is logged. It returns how many were removed.
func (b *Broker) RecheckSubscriptions(ctx context.Context) int {
	az := b.opts.Authorizer
	if az == nil {
		return 0
	}
	type check struct {
		s      *session
		c      Client
		filter string
	}
	var checks []check
	b.mu.Lock()
	for _, s := range b.sessions {
		var c Client
		switch {
		case s.conn != nil:
			c = Client{ID: s.conn.clientID, Username: s.conn.username} // fixed once connected
		case strings.HasPrefix(s.owner, "u:"):
			c = Client{ID: s.id, Username: strings.TrimPrefix(s.owner, "u:")}
		default:
			continue // user unknown: judged at its next SUBSCRIBE
		}
		for k := range s.subs {
			checks = append(checks, check{s, c, k})
		}
	}
	b.mu.Unlock()
	// Asked without b.mu, as from a client's goroutine.
	var refused []check
	for _, ch := range checks {
		if err := az.AuthorizeSubscribe(ctx, ch.c, ch.filter); err != nil {
			refused = append(refused, ch)
		}
	}
	if len(refused) == 0 {
		return 0
	}
	n := 0
	var ops []op
	b.mu.Lock()
	touched := map[*session]bool{}
	for _, ch := range refused {
		if b.sessions[ch.s.id] != ch.s || !b.removeSub(ch.s, ch.filter, &ops) {
			continue // the session or subscription changed meanwhile
		}
		n++
		touched[ch.s] = true
		b.log.Info("subscription removed: no longer authorized", "client", ch.s.id, "user", ch.c.Username, "filter", ch.filter)
	}
	for s := range touched {
		if s.persistent {
			ops = append(ops, op{kind: opPutSession, owner: s.id, val: s.record()})
		}
	}
	b.dispatchGroups(time.Now(), &ops)
	if len(ops) > 0 {
		b.store.submit(ops, nil)
	}
	b.mu.Unlock()
	return n
}
