package main

import (
	"context"
	"log/slog"
	"path/filepath"

	"github.com/mqdapr/mqdapr/broker"
	"github.com/mqdapr/mqdapr/broker/kvservice"
	"github.com/mqdapr/mqdapr/broker/statestore"
)

// kvStack is the key-value store served inside the broker: the engine, its service and, with a
// data directory, the file that keeps durable keys across restarts.
type kvStack struct {
	engine *statestore.Engine
	svc    *kvservice.Service
	store  *kvservice.LogStore
}

// openKV builds the key-value store from the configuration and loads its durable keys (TTL
// deadlines are absolute, so expiry continues across a restart). It returns an empty stack when
// -kv=false.
func openKV(cfg config, az broker.Authorizer, log *slog.Logger) (*kvStack, error) {
	k := &kvStack{}
	if !cfg.KV {
		return k, nil
	}
	opts := statestore.NewDefaultOptions()
	opts.NodeID, opts.MaxKeys, opts.MaxValueBytes = cfg.KVNodeID, cfg.KVMaxKeys, cfg.KVMaxValue
	opts.PersistAll, opts.Logger = cfg.KVPersistAll, log
	// Key-level access from the ACL (read: GET, KEYNOTIFY; write: SET, DEL, VDEL).
	opts.Authorize = kvservice.KeyAuthorization(az)
	if cfg.DataDir != "" {
		store, err := kvservice.OpenLogStore(filepath.Join(cfg.DataDir, "kv"))
		if err != nil {
			return nil, err
		}
		k.store, opts.Store = store, store
	} else {
		opts.PersistAll = false
	}
	engine, err := statestore.NewEngine(opts)
	if err != nil {
		k.close()
		return nil, err
	}
	k.engine = engine
	if err := engine.Load(context.Background()); err != nil {
		k.close()
		return nil, err
	}
	svc, err := kvservice.New(kvservice.Options{Engine: engine, Logger: log})
	if err != nil {
		k.close()
		return nil, err
	}
	k.svc = svc
	return k, nil
}

// close stops the service, then the engine, then the file. Safe on a partial stack.
func (k *kvStack) close() {
	if k == nil {
		return
	}
	if k.svc != nil {
		_ = k.svc.Close()
	}
	if k.engine != nil {
		_ = k.engine.Close()
	}
	if k.store != nil {
		_ = k.store.Close()
	}
}
