package broker

import (
	"net"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Failed authentications are limited per remote IP address: each refusal of the Authenticator
// takes a token from the address's bucket (AuthFailureBurst tokens, one more every
// AuthFailureRefill), and a CONNECT from an address whose bucket is empty is refused with
// CONNACK 0x9F Connection rate exceeded before the Authenticator runs. So a client guessing
// passwords costs the broker at most one bcrypt comparison per AuthFailureRefill after its burst,
// instead of one per CONNECT it can send; clients that authenticate take nothing. Behind one NAT
// address, a client failing in a loop holds the others back as well: raise the burst there.

// authRefusalsSummary is the line that counts the authentication refusals the rate limit of their
// log lines left out (Broker.authLog).
const authRefusalsSummary = "authentication refusals not logged (rate limit)"

// CodeConnectionRateExceeded is CONNACK 0x9F (MQTT v5 §3.2.2.2).
const CodeConnectionRateExceeded byte = 0x9F

// maxAuthLimitAddrs bounds the addresses tracked; beyond it, buckets that have refilled are dropped,
// then the oldest.
const maxAuthLimitAddrs = 10000

type authLimiter struct {
	burst  int
	refill time.Duration

	mu    sync.Mutex
	addrs map[string]*authBucket
}

type authBucket struct {
	lim  *rate.Limiter
	last time.Time // the last failure
}

func newAuthLimiter(burst int, refill time.Duration) *authLimiter {
	if burst <= 0 || refill <= 0 {
		return nil // disabled
	}
	return &authLimiter{burst: burst, refill: refill, addrs: map[string]*authBucket{}}
}

// addrKey is the IP address of a remote address (the port changes with every connection).
func addrKey(a net.Addr) string {
	if a == nil {
		return ""
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

// allowed reports whether a CONNECT from addr may be authenticated: its bucket holds a token.
func (l *authLimiter) allowed(addr net.Addr, now time.Time) bool {
	if l == nil {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.addrs[addrKey(addr)]
	return b == nil || b.lim.TokensAt(now) >= 1
}

// failed takes a token from addr's bucket.
func (l *authLimiter) failed(addr net.Addr, now time.Time) {
	if l == nil {
		return
	}
	key := addrKey(addr)
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.addrs[key]
	if b == nil {
		if len(l.addrs) >= maxAuthLimitAddrs {
			l.evict(now)
		}
		b = &authBucket{lim: rate.NewLimiter(rate.Every(l.refill), l.burst)}
		l.addrs[key] = b
	}
	b.lim.AllowN(now, 1)
	b.last = now
}

// evict drops the buckets that are full again (their failures are forgotten), or else the one
// whose last failure is the oldest. Called with mu held.
func (l *authLimiter) evict(now time.Time) {
	var oldest string
	for k, b := range l.addrs {
		if b.lim.TokensAt(now) >= float64(l.burst) {
			delete(l.addrs, k)
		} else if oldest == "" || b.last.Before(l.addrs[oldest].last) {
			oldest = k
		}
	}
	if len(l.addrs) >= maxAuthLimitAddrs {
		delete(l.addrs, oldest)
	}
}
