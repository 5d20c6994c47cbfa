package kv

import (
	"context"
	"errors"
	"testing"
	"time"

	dapr "github.com/dapr/go-sdk/client"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

type fakeClient struct {
	item  *dapr.StateItem
	err   error
	saved struct {
		etag string
		meta map[string]string
		opts dapr.StateOptions
	}
	bulk []*dapr.SetStateItem
}

func (f *fakeClient) SaveBulkState(_ context.Context, _ string, items ...*dapr.SetStateItem) error {
	f.bulk = items
	return f.err
}

func (f *fakeClient) GetState(context.Context, string, string, map[string]string) (*dapr.StateItem, error) {
	return f.item, f.err
}

func (f *fakeClient) SaveStateWithETag(_ context.Context, _, _ string, _ []byte, etag string, meta map[string]string, so ...dapr.StateOption) error {
	f.saved.etag, f.saved.meta = etag, meta
	f.saved.opts = dapr.StateOptions{}
	for _, o := range so {
		o(&f.saved.opts)
	}
	return f.err
}

func TestDaprAdapterMapsErrorsAndOptions(t *testing.T) {
	ctx := context.Background()
	f := &fakeClient{}
	d := NewDapr(f, "kv")

	f.item = &dapr.StateItem{Key: "k"}
	if _, _, found, err := d.Get(ctx, "k"); found || err != nil {
		t.Fatalf("absent key: found %v err %v", found, err)
	}
	f.item = &dapr.StateItem{Key: "k", Value: []byte("v"), Etag: "7"}
	if v, etag, found, err := d.Get(ctx, "k"); !found || err != nil || string(v) != "v" || etag != "7" {
		t.Fatalf("Get = %q %q %v %v", v, etag, found, err)
	}

	if err := d.Create(ctx, "k", nil, 0); err != nil || f.saved.opts.Concurrency != dapr.StateConcurrencyFirstWrite || f.saved.etag != "" || f.saved.meta != nil {
		t.Fatalf("Create: %v %+v", err, f.saved)
	}
	if err := d.Create(ctx, "k", nil, 2*time.Hour); err != nil || f.saved.opts.Concurrency != dapr.StateConcurrencyFirstWrite || f.saved.meta["ttlInSeconds"] != "7200" {
		t.Fatalf("Create with a TTL: %v %+v", err, f.saved)
	}
	if err := d.Put(ctx, "k", nil, 90*time.Second); err != nil || f.saved.opts.Concurrency != dapr.StateConcurrencyLastWrite || f.saved.meta["ttlInSeconds"] != "90" {
		t.Fatalf("Put: %v %+v", err, f.saved)
	}
	if err := d.Replace(ctx, "k", nil, "7", 0); err != nil || f.saved.etag != "7" || f.saved.meta != nil {
		t.Fatalf("Replace: %v %+v", err, f.saved)
	}
	if err := d.PutMany(ctx, []Item{{Key: "a", Value: []byte("1")}, {Key: "b", Value: []byte("2")}}, time.Hour); err != nil || len(f.bulk) != 2 ||
		f.bulk[1].Key != "b" || string(f.bulk[1].Value) != "2" || f.bulk[1].Metadata["ttlInSeconds"] != "3600" ||
		f.bulk[0].Options.Concurrency != dapr.StateConcurrencyLastWrite || f.bulk[0].Etag != nil {
		t.Fatalf("PutMany: %v %+v", err, f.bulk)
	}

	if err := d.CreateMany(ctx, []Item{{Key: "a", Value: []byte("1")}, {Key: "b", Value: []byte("2")}}, time.Hour); err != nil || len(f.bulk) != 2 ||
		f.bulk[1].Key != "b" || string(f.bulk[1].Value) != "2" || f.bulk[1].Metadata["ttlInSeconds"] != "3600" ||
		f.bulk[0].Options.Concurrency != dapr.StateConcurrencyFirstWrite || f.bulk[0].Etag != nil {
		t.Fatalf("CreateMany: %v %+v", err, f.bulk)
	}

	f.err = status.Error(codes.Aborted, "etag mismatch")
	if err := d.CreateMany(ctx, []Item{{Key: "a"}}, 0); !errors.Is(err, ErrStore) {
		t.Fatalf("CreateMany conflict: %v; want ErrStore (which key is not known)", err)
	}
	if err := d.Create(ctx, "k", nil, 0); !errors.Is(err, ErrExists) {
		t.Fatalf("Create conflict: %v", err)
	}
	if err := d.Replace(ctx, "k", nil, "7", 0); !errors.Is(err, ErrConflict) {
		t.Fatalf("Replace conflict: %v", err)
	}
	if err := d.Put(ctx, "k", nil, 0); !errors.Is(err, ErrStore) {
		t.Fatalf("Put: %v; want ErrStore", err)
	}
	if err := d.PutMany(ctx, []Item{{Key: "a"}}, 0); !errors.Is(err, ErrStore) {
		t.Fatalf("PutMany: %v; want ErrStore", err)
	}
	f.err = status.Error(codes.Unavailable, "daprd away")
	if err := d.Create(ctx, "k", nil, 0); !errors.Is(err, ErrStore) || errors.Is(err, ErrExists) {
		t.Fatalf("Create unavailable: %v; want ErrStore", err)
	}
	if _, _, _, err := d.Get(ctx, "k"); !errors.Is(err, ErrStore) {
		t.Fatalf("Get unavailable: %v", err)
	}
}

func TestCountedCountsCallsAndKeys(t *testing.T) {
	ctx := context.Background()
	c := &Counted{Store: NewMem()}
	_ = c.Create(ctx, "a", nil, 0)
	_ = c.CreateMany(ctx, []Item{{Key: "b"}, {Key: "c"}}, 0)
	_, _, _, _ = c.Get(ctx, "a")
	_ = c.PutMany(ctx, []Item{{Key: "d"}, {Key: "e"}, {Key: "f"}}, 0)
	if calls, keys := c.Calls.Load(), c.Keys.Load(); calls != 4 || keys != 7 {
		t.Fatalf("%d calls, %d keys; want 4 and 7", calls, keys)
	}
}
