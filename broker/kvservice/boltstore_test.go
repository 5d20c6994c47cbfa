package kvservice

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mqdapr/mqdapr/broker/statestore"
	"github.com/mqdapr/mqdapr/internal/hlc"
)

func TestBoltStoreRoundTripAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenBoltStore(dir)
	require.NoError(t, err)
	v, err := hlc.Parse("001696374425000:00001:node")
	require.NoError(t, err)
	ft, err := hlc.Parse("001696374425000:00000:node")
	require.NoError(t, err)
	exp := time.Unix(1900000000, 123)
	ctx := context.Background()
	require.NoError(t, s.Save(ctx, statestore.Record{Key: []byte("a"), Value: []byte("1"), Version: v}))
	require.NoError(t, s.Save(ctx, statestore.Record{Key: []byte("b"), Value: []byte("2"), Version: v, Fenced: true, FencingToken: ft, ExpiresAt: exp}))
	require.NoError(t, s.Save(ctx, statestore.Record{Key: []byte("gone"), Value: []byte("x"), Version: v}))
	require.NoError(t, s.Delete(ctx, []byte("gone")))
	require.NoError(t, s.Delete(ctx, []byte("never-there")))
	require.NoError(t, s.Close())

	s, err = OpenBoltStore(dir)
	require.NoError(t, err)
	defer s.Close()
	got := map[string]statestore.Record{}
	require.NoError(t, s.Load(ctx, func(r statestore.Record) error { got[string(r.Key)] = r; return nil }))
	require.Len(t, got, 2)
	assert.Equal(t, "1", string(got["a"].Value))
	assert.Equal(t, v, got["a"].Version)
	assert.True(t, got["a"].ExpiresAt.IsZero())
	assert.True(t, got["b"].Fenced)
	assert.Equal(t, ft, got["b"].FencingToken)
	assert.True(t, exp.Equal(got["b"].ExpiresAt), "absolute TTL deadline kept")
}
