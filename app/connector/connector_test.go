package connector

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dapr/go-sdk/service/common"

	"github.com/mqdapr/mqdapr/app/dedup"
	"github.com/mqdapr/mqdapr/app/kv"
	"github.com/mqdapr/mqdapr/app/lake"
	"github.com/mqdapr/mqdapr/app/telemetry"
)

var now = time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)

// fakeDL records dead letters; fail makes the publish fail.
type fakeDL struct {
	mu   sync.Mutex
	msgs []map[string]string
	fail atomic.Bool
}

func (f *fakeDL) PublishDeadLetter(_ context.Context, topic string, data []byte) error {
	if f.fail.Load() {
		return errors.New("pub/sub away")
	}
	var m map[string]string
	if err := json.Unmarshal(data, &m); err != nil {
		return err
	}
	m["_topic"] = topic
	f.mu.Lock()
	f.msgs = append(f.msgs, m)
	f.mu.Unlock()
	return nil
}

type fixture struct {
	c     *Connector
	dl    *fakeDL
	store *kv.Mem
	root  string
	lake  *lake.Lake
}

func newFixture(t *testing.T, replica string, store *kv.Mem, root string, sync lake.SyncFunc) *fixture {
	t.Helper()
	l, err := lake.New(lake.Options{Root: root, Replica: replica, Sync: sync})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	clock := func() time.Time { return now }
	dl := &fakeDL{}
	c, err := New(Options{
		TelemetryFilter: "devices/+/telemetry",
		ConfigFilter:    "config/assets/+",
		DeadLetterTopic: "deadletter/telemetry",
		Store:           store,
		Lake:            l,
		Dedup:           dedup.New(dedup.Options{Store: store, Rows: l, Replica: replica, Now: clock}),
		DeadLet:         dl,
		Validator:       &telemetry.Validator{Now: clock, MaxFutureSkew: time.Minute},
		Log:             slog.New(slog.NewTextHandler(io.Discard, nil)),
		Now:             clock,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Flush(context.Background()) }) // no background writer outlives the test
	return &fixture{c: c, dl: dl, store: store, root: root, lake: l}
}

const assetCfg = `{"assetId":"press-7","site":"plant-a","line":"line-2","devices":["dev-1"],"attributes":{"model":"X"}}`

func reading(seq, ts string, tempF string) []byte {
	return []byte(`{"deviceId":"dev-1","seq":` + seq + `,"ts":"` + ts + `","metrics":{"temperature":{"value":` + tempF + `,"unit":"F"}}}`)
}

func (f *fixture) rows(t *testing.T) []Row {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(f.root, "date=*", "asset=*", "part-*.jsonl"))
	var out []Row
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			if line == "" {
				continue
			}
			var r Row
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			out = append(out, r)
		}
	}
	return out
}

func TestTelemetryIsContextualisedAndWritten(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, "r1", kv.NewMem(), t.TempDir(), nil)
	if err := f.c.Handle(ctx, Message{Topic: "config/assets/press-7", Data: []byte(assetCfg)}); err != nil {
		t.Fatal(err)
	}
	for _, m := range []Message{
		{Topic: "devices/dev-1/telemetry", Data: reading("1", "2026-11-27T07:00:00Z", "212")},
		{Topic: "devices/dev-1/telemetry", Data: reading("2", "2026-11-27T07:00:01Z", "32")},
	} {
		if err := f.c.Handle(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	rows := f.rows(t)
	if len(rows) != 2 {
		t.Fatalf("%d rows; want 2", len(rows))
	}
	r := rows[1]
	if r.ID != "dev-1/2" || r.AssetID != "press-7" || r.Site != "plant-a" || r.Line != "line-2" || r.Attributes["model"] != "X" {
		t.Fatalf("row not contextualised: %+v", r)
	}
	if got := r.Metrics["temperature"]; got != (telemetry.Metric{Value: 0, Unit: "C"}) {
		t.Fatalf("metric %+v; want 0 C", got)
	}
	if got := r.Previous["temperature"]; got != (telemetry.Metric{Value: 100, Unit: "C"}) || r.PreviousTS != "2026-11-27T07:00:00Z" {
		t.Fatalf("previous %+v at %s; want 100 C at 07:00:00", got, r.PreviousTS)
	}
	if _, err := os.Stat(filepath.Join(f.root, "date=2026-11-27", "asset=press-7", "part-r1.jsonl")); err != nil {
		t.Fatalf("partition file: %v", err)
	}
	if s := f.c.Counters().Snapshot(); s["written"] != 2 || s["received"] != 2 || s["configs"] != 1 {
		t.Fatalf("counters %v", s)
	}
}

func TestRedeliveryOnAnotherReplicaWritesNoSecondRow(t *testing.T) {
	ctx := context.Background()
	store, root := kv.NewMem(), t.TempDir()
	a := newFixture(t, "a", store, root, nil)
	b := newFixture(t, "b", store, root, nil)
	m := Message{Topic: "devices/dev-1/telemetry", Data: reading("5", "2026-11-27T07:00:00Z", "50")}
	for _, f := range []*fixture{a, a, b} {
		if f == b {
			// a's done set is written behind the ack, up to a window later; until then b
			// answers ErrClaimedElsewhere (a retry), as TestDoneSetWindow in app/dedup shows.
			if err := a.c.Flush(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if err := f.c.Handle(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(a.rows(t)); n != 1 {
		t.Fatalf("%d rows; want 1", n)
	}
	if a.c.Counters().Duplicates.Load() != 1 || b.c.Counters().Duplicates.Load() != 1 {
		t.Fatalf("duplicates a=%d b=%d; want 1 each", a.c.Counters().Duplicates.Load(), b.c.Counters().Duplicates.Load())
	}
}

func TestMessageIDPropertyIsTheIdentity(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, "r1", kv.NewMem(), t.TempDir(), nil)
	data := []byte(`{"deviceId":"dev-1","ts":1795766400000,"metrics":{"p":{"value":1,"unit":"bar"}}}`)
	md := map[string]string{MessageIDProperty: "abc"}
	for range 2 {
		if err := f.c.Handle(ctx, Message{Topic: "devices/dev-1/telemetry", Data: data, Metadata: md}); err != nil {
			t.Fatal(err)
		}
	}
	rows := f.rows(t)
	if len(rows) != 1 || rows[0].ID != "dev-1/m-abc" || rows[0].Seq != nil || rows[0].AssetID != "unassigned" {
		t.Fatalf("rows %+v; want one unassigned row dev-1/m-abc", rows)
	}
}

func TestInvalidTelemetryGoesToDeadLetter(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, "r1", kv.NewMem(), t.TempDir(), nil)
	bad := Message{Topic: "devices/dev-1/telemetry", Data: []byte(`{"deviceId":"dev-1","seq":1,"ts":1795766400000,"metrics":{"t":{"value":1,"unit":"furlong"}}}`)}
	f.dl.fail.Store(true)
	if err := f.c.Handle(ctx, bad); err == nil {
		t.Fatal("dead-letter publish failed but the message was acked")
	}
	f.dl.fail.Store(false)
	if err := f.c.Handle(ctx, bad); err != nil {
		t.Fatal(err)
	}
	if len(f.dl.msgs) != 1 {
		t.Fatalf("%d dead letters; want 1", len(f.dl.msgs))
	}
	dl := f.dl.msgs[0]
	if dl["_topic"] != "deadletter/telemetry" || !strings.Contains(dl["reason"], `unit "furlong"`) || dl["topic"] != bad.Topic || dl["payload"] != string(bad.Data) {
		t.Fatalf("dead letter %v", dl)
	}
	if f.c.Counters().Rejected.Load() != 1 || len(f.rows(t)) != 0 {
		t.Fatal("rejected message counted wrong or written")
	}
	// A device publishing on another device's topic is rejected too.
	if err := f.c.Handle(ctx, Message{Topic: "devices/dev-2/telemetry", Data: reading("1", "2026-11-27T07:00:00Z", "1")}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(f.dl.msgs[1]["reason"], "differs") {
		t.Fatalf("reason %q", f.dl.msgs[1]["reason"])
	}
}

func TestInvalidConfigGoesToDeadLetter(t *testing.T) {
	f := newFixture(t, "r1", kv.NewMem(), t.TempDir(), nil)
	if err := f.c.Handle(context.Background(), Message{Topic: "config/assets/other", Data: []byte(assetCfg)}); err != nil {
		t.Fatal(err)
	}
	if len(f.dl.msgs) != 1 || !strings.Contains(f.dl.msgs[0]["reason"], "differs") {
		t.Fatalf("dead letters %v", f.dl.msgs)
	}
	if err := f.c.Handle(context.Background(), Message{Topic: "config/assets/press-7"}); err != nil {
		t.Fatalf("cleared retained config: %v", err)
	}
}

// TestLateReplicaGetsConfigFromState: the configuration was applied by another replica only.
func TestLateReplicaGetsConfigFromState(t *testing.T) {
	ctx := context.Background()
	store, root := kv.NewMem(), t.TempDir()
	a := newFixture(t, "a", store, root, nil)
	if err := a.c.Handle(ctx, Message{Topic: "config/assets/press-7", Data: []byte(assetCfg)}); err != nil {
		t.Fatal(err)
	}
	b := newFixture(t, "b", store, root, nil)
	if err := b.c.Handle(ctx, Message{Topic: "devices/dev-1/telemetry", Data: reading("1", "2026-11-27T07:00:00Z", "1")}); err != nil {
		t.Fatal(err)
	}
	if rows := b.rows(t); len(rows) != 1 || rows[0].AssetID != "press-7" || rows[0].Replica != "b" {
		t.Fatalf("rows %+v", rows)
	}
}

// TestFsyncFailureThenRedelivery: the lake write fails, the handler asks for redelivery, and the
// redelivery reconciles instead of writing the row twice.
func TestFsyncFailureThenRedelivery(t *testing.T) {
	var fail atomic.Bool
	fail.Store(true)
	f := newFixture(t, "r1", kv.NewMem(), t.TempDir(), func(file *os.File) error {
		if fail.Swap(false) {
			return errors.New("EIO")
		}
		return file.Sync()
	})
	m := Message{Topic: "devices/dev-1/telemetry", Data: reading("1", "2026-11-27T07:00:00Z", "1")}
	if err := f.c.Handle(context.Background(), m); !errors.Is(err, lake.ErrWrite) {
		t.Fatalf("err = %v; want lake.ErrWrite", err)
	}
	if err := f.c.Handle(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	if n := len(f.rows(t)); n != 1 {
		t.Fatalf("%d rows; want 1", n)
	}
	if s := f.c.Counters().Snapshot(); s["failed"] != 1 || s["duplicates_skipped"] != 1 {
		t.Fatalf("counters %v", s)
	}
}

func TestStateStoreDownIsRetriable(t *testing.T) {
	store := kv.NewMem()
	store.Hook = func(string, string) error { return kv.ErrStore }
	f := newFixture(t, "r1", store, t.TempDir(), nil)
	m := Message{Topic: "devices/dev-1/telemetry", Data: reading("1", "2026-11-27T07:00:00Z", "1")}
	if err := f.c.Handle(context.Background(), m); !errors.Is(err, kv.ErrStore) {
		t.Fatalf("err = %v; want kv.ErrStore", err)
	}
	if len(f.rows(t)) != 0 {
		t.Fatal("a row was written without a dedup claim")
	}
}

func TestUnroutableTopic(t *testing.T) {
	f := newFixture(t, "r1", kv.NewMem(), t.TempDir(), nil)
	if err := f.c.Handle(context.Background(), Message{Topic: "x/y"}); !errors.Is(err, ErrUnroutable) {
		t.Fatalf("err = %v; want ErrUnroutable", err)
	}
}

func TestMatchTopic(t *testing.T) {
	tests := []struct {
		filter, topic string
		ok            bool
		plus          string
	}{
		{"devices/+/telemetry", "devices/d1/telemetry", true, "d1"},
		{"devices/+/telemetry", "devices/d1/status", false, ""},
		{"devices/+/telemetry", "devices/d1/telemetry/x", false, ""},
		{"config/assets/+", "config/assets/a1", true, "a1"},
		{"config/#", "config/assets/a1", true, ""},
		{"plant/+/+/telemetry", "plant/p/d/telemetry", true, "p"},
		{"a/b", "a/b", true, ""},
	}
	for _, tc := range tests {
		ok, plus := matchTopic(tc.filter, tc.topic)
		if ok != tc.ok || plus != tc.plus {
			t.Errorf("matchTopic(%q, %q) = %v %q; want %v %q", tc.filter, tc.topic, ok, plus, tc.ok, tc.plus)
		}
	}
	for _, bad := range []string{"", "a/#/b", "a/b+", "$share/g/a"} {
		if validFilter(bad) == nil {
			t.Errorf("validFilter(%q) accepted", bad)
		}
	}
}

func TestSDKBinding(t *testing.T) {
	f := newFixture(t, "r1", kv.NewMem(), t.TempDir(), nil)
	subs := Subscriptions("mqtt", "connector", f.c.opts)
	if len(subs) != 2 {
		t.Fatalf("%d subscriptions", len(subs))
	}
	tel, cfg := subs[0], subs[1]
	if tel.Topic != "devices/+/telemetry" || tel.Metadata["sharedSubscriptionGroup"] != "connector" || tel.Metadata["rawPayload"] != "true" || !tel.DisableTopicValidation {
		t.Fatalf("telemetry subscription %+v", tel)
	}
	if cfg.Topic != "config/assets/+" || cfg.Metadata["rawPayload"] != "true" || cfg.Metadata["sharedSubscriptionGroup"] != "" {
		t.Fatalf("config subscription %+v", cfg)
	}
	if g, ok := cfg.Metadata["sharedSubscriptionGroup"]; !ok || g != "" {
		t.Fatalf("config subscription %+v", cfg)
	}
	retry, err := f.c.TopicEventHandler(context.Background(), &common.TopicEvent{
		Topic: "devices/+/telemetry", PubsubName: "mqtt", RawData: reading("1", "2026-11-27T07:00:00Z", "1"),
		Metadata: map[string]string{"mqtt-topic": "devices/dev-1/telemetry"},
	})
	if retry || err != nil {
		t.Fatalf("handler: retry %v err %v", retry, err)
	}
	if retry, err := f.c.TopicEventHandler(context.Background(), &common.TopicEvent{Topic: "other"}); !retry || err == nil {
		t.Fatalf("unroutable: retry %v err %v; want retry", retry, err)
	}
}

// A reject whose publish fails (a pub/sub that reports the broker's 0x10 "no matching
// subscribers" as an error, or any other failure) is not a reject: the message is not acked, the
// failure is counted and logged as an error, on the telemetry and the configuration path alike;
// once the publish is accepted the message is acked and counted as rejected.
func TestRejectIsAckedOnlyOnceTheDeadLetterIsAccepted(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, "r1", kv.NewMem(), t.TempDir(), nil)
	var logs syncBuffer
	f.c.log = slog.New(slog.NewTextHandler(&logs, nil))
	badTel := Message{Topic: "devices/dev-1/telemetry", Data: []byte(`{"deviceId":"dev-1","seq":1,"ts":1795766400000,"metrics":{"t":{"value":1,"unit":"furlong"}}}`)}
	badCfg := Message{Topic: "config/assets/other", Data: []byte(assetCfg)}
	f.dl.fail.Store(true)
	for _, m := range []Message{badTel, badCfg} {
		if err := f.c.Handle(ctx, m); err == nil {
			t.Fatalf("%s: dead-letter publish failed but the message was acked", m.Topic)
		}
	}
	if got := f.c.Counters().Failed.Load(); got != 2 {
		t.Fatalf("failed %d; want 2 (telemetry and configuration)", got)
	}
	if got := f.c.Counters().Rejected.Load(); got != 0 {
		t.Fatalf("rejected %d before any dead letter was accepted", got)
	}
	if n := strings.Count(logs.String(), "level=ERROR msg=\"rejected message NOT dead-lettered"); n != 2 {
		t.Fatalf("%d error lines for the failed dead-letter publishes; want 2:\n%s", n, logs.String())
	}
	f.dl.fail.Store(false)
	for _, m := range []Message{badTel, badCfg} {
		if err := f.c.Handle(ctx, m); err != nil {
			t.Fatalf("%s: %v", m.Topic, err)
		}
	}
	if got := f.c.Counters().Rejected.Load(); got != 2 || len(f.dl.msgs) != 2 {
		t.Fatalf("rejected %d, dead letters %d; want 2 and 2", got, len(f.dl.msgs))
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// hangingLast is a store whose reads and writes of last-known values hang until ctx ends (a
// killed state component: calls wait for their deadline), and that counts them.
type hangingLast struct {
	*kv.Mem
	lastCalls atomic.Int32
}

func (h *hangingLast) hang(ctx context.Context, key string) error {
	if !strings.HasPrefix(key, "last/") {
		return nil
	}
	h.lastCalls.Add(1)
	<-ctx.Done()
	return errors.Join(kv.ErrStore, ctx.Err())
}

func (h *hangingLast) Get(ctx context.Context, key string) ([]byte, string, bool, error) {
	if err := h.hang(ctx, key); err != nil {
		return nil, "", false, err
	}
	return h.Mem.Get(ctx, key)
}

// TestLastKnownValuesAreOffTheAckPath: the last-known values are context, not data: when the
// state store does not answer for them, every reading is still written and acked (the read of a
// device's values waits lastLoadTimeout once, then the rows go without them), and the second
// reading of the device gets the first one's values from this replica's cache.
func TestLastKnownValuesAreOffTheAckPath(t *testing.T) {
	store := &hangingLast{Mem: kv.NewMem()}
	root := t.TempDir()
	l, err := lake.New(lake.Options{Root: root, Replica: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	clock := func() time.Time { return now }
	c, err := New(Options{
		TelemetryFilter: "devices/+/telemetry", ConfigFilter: "config/assets/+", DeadLetterTopic: "dl",
		Store: store, Lake: l, Dedup: dedup.New(dedup.Options{Store: store, Rows: l, Replica: "r1", Now: clock}),
		DeadLet: &fakeDL{}, Validator: &telemetry.Validator{Now: clock, MaxFutureSkew: time.Minute},
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: clock,
	})
	if err != nil {
		t.Fatal(err)
	}
	c.last.writeTimeout = 50 * time.Millisecond // the background writer gives up soon, for Flush
	f := &fixture{c: c, root: root, lake: l}
	// A deadline far beyond lastLoadTimeout: the handler must not wait for the store's answer.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, m := range []Message{
		{Topic: "devices/dev-1/telemetry", Data: reading("1", "2026-11-27T07:00:00Z", "212")},
		{Topic: "devices/dev-1/telemetry", Data: reading("2", "2026-11-27T07:00:01Z", "32")},
	} {
		if err := c.Handle(ctx, m); err != nil {
			t.Fatalf("delivery failed for its context: %v", err)
		}
	}
	rows := f.rows(t)
	if len(rows) != 2 || rows[0].Previous != nil || rows[1].Previous["temperature"] != (telemetry.Metric{Value: 100, Unit: "C"}) {
		t.Fatalf("rows %+v; want 2, the second with the first's values", rows)
	}
	if s := c.Counters().Snapshot(); s["written"] != 2 || s["failed"] != 0 {
		t.Fatalf("counters %v", s)
	}
	if n := store.lastCalls.Load(); n < 1 {
		t.Fatalf("%d calls for last-known values; want the store asked", n)
	}
	fctx, fcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer fcancel()
	if err := c.Flush(fctx); err != nil {
		t.Fatal(err)
	}
}
