package connector

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/mqdapr/mqdapr/app/kv"
	"github.com/mqdapr/mqdapr/app/lake"
)

// Asset is the configuration of one asset, published retained on <config prefix>/<assetId>:
//
//	{"assetId":"press-7","site":"plant-a","line":"line-2","devices":["dev-001"],"attributes":{"model":"X"}}
type Asset struct {
	AssetID    string            `json:"assetId"`
	Site       string            `json:"site"`
	Line       string            `json:"line"`
	Devices    []string          `json:"devices"`
	Attributes map[string]string `json:"attributes,omitempty"`
}

func parseAsset(data []byte, topicAsset string) (*Asset, error) {
	var a Asset
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&a); err != nil {
		return nil, fmt.Errorf("%w: not the asset JSON {assetId, site, line, devices}: %w", ErrInvalidConfig, err)
	}
	if !lake.ValidName(a.AssetID) {
		return nil, fmt.Errorf("%w: assetId %q; want 1-128 of A-Z a-z 0-9 . _ -", ErrInvalidConfig, a.AssetID)
	}
	if topicAsset != "" && topicAsset != a.AssetID {
		return nil, fmt.Errorf("%w: assetId %q differs from the asset %q of the topic", ErrInvalidConfig, a.AssetID, topicAsset)
	}
	for _, d := range a.Devices {
		if !lake.ValidName(d) {
			return nil, fmt.Errorf("%w: device id %q; want 1-128 of A-Z a-z 0-9 . _ -", ErrInvalidConfig, d)
		}
	}
	return &a, nil
}

// assetKey and deviceKey are the state keys of the configuration, shared by replicas.
func assetKey(id string) string    { return "asset/" + id }
func deviceKey(id string) string   { return "device/" + id }
func lastKey(device string) string { return "last/" + device }

// assets caches device → asset, backed by the state store (so a replica started after the
// configuration was published, or whose retained copy was cleared, still finds it).
type assets struct {
	store   kv.Store
	now     func() time.Time
	missTTL time.Duration

	mu     sync.Mutex // guards byDev and misses
	byDev  map[string]*Asset
	misses map[string]time.Time // device → when the store last had no asset for it
}

func newAssets(store kv.Store, now func() time.Time, missTTL time.Duration) *assets {
	return &assets{store: store, now: now, missTTL: missTTL, byDev: map[string]*Asset{}, misses: map[string]time.Time{}}
}

// apply stores a configuration (asset record, then one device → asset record per device) and
// caches it. Devices that an earlier version listed and this one does not keep their mapping
// until another asset claims them.
func (a *assets) apply(ctx context.Context, asset *Asset) error {
	data, _ := json.Marshal(asset)
	if err := a.store.Put(ctx, assetKey(asset.AssetID), data, 0); err != nil {
		return fmt.Errorf("connector: storing asset %s: %w", asset.AssetID, err)
	}
	for _, d := range asset.Devices {
		if err := a.store.Put(ctx, deviceKey(d), []byte(asset.AssetID), 0); err != nil {
			return fmt.Errorf("connector: storing device %s → %s: %w", d, asset.AssetID, err)
		}
	}
	a.mu.Lock()
	for _, d := range asset.Devices {
		a.byDev[d] = asset
		delete(a.misses, d)
	}
	a.mu.Unlock()
	return nil
}

// lookup returns the asset of device, or nil when none is configured.
func (a *assets) lookup(ctx context.Context, device string) (*Asset, error) {
	a.mu.Lock()
	if as, ok := a.byDev[device]; ok {
		a.mu.Unlock()
		return as, nil
	}
	if at, ok := a.misses[device]; ok && a.now().Sub(at) < a.missTTL {
		a.mu.Unlock()
		return nil, nil
	}
	a.mu.Unlock()
	as, err := a.load(ctx, device)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if as == nil {
		a.misses[device] = a.now()
		return nil, nil
	}
	if cur, ok := a.byDev[device]; ok { // a config applied meanwhile wins
		return cur, nil
	}
	a.byDev[device] = as
	return as, nil
}

func (a *assets) load(ctx context.Context, device string) (*Asset, error) {
	id, _, found, err := a.store.Get(ctx, deviceKey(device))
	if err != nil || !found {
		return nil, err
	}
	data, _, found, err := a.store.Get(ctx, assetKey(string(id)))
	if err != nil || !found {
		return nil, err
	}
	as, err := parseAsset(data, "")
	if err != nil {
		return nil, errors.Join(fmt.Errorf("connector: stored asset %s", id), err)
	}
	return as, nil
}
