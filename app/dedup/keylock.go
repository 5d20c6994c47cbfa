package dedup

import (
	"context"
	"sync"
)

// keyLocks serialises work on one key within this process.
type keyLocks struct {
	mu   sync.Mutex               // guards held
	held map[string]chan struct{} // closed when the holder releases
}

// lock blocks until key is free or ctx ends; the returned func releases it.
func (k *keyLocks) lock(ctx context.Context, key string) (func(), error) {
	for {
		k.mu.Lock()
		ch, busy := k.held[key]
		if !busy {
			ch = make(chan struct{})
			k.held[key] = ch
			k.mu.Unlock()
			var once sync.Once
			return func() {
				once.Do(func() {
					k.mu.Lock()
					delete(k.held, key)
					k.mu.Unlock()
					close(ch)
				})
			}, nil
		}
		k.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
