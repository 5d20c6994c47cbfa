package lake

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func newTestLake(t *testing.T, sync SyncFunc) *Lake {
	t.Helper()
	l, err := New(Options{Root: t.TempDir(), Replica: "r1", Sync: sync})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func TestPartitionLayout(t *testing.T) {
	l := newTestLake(t, nil)
	rel, err := l.Partition(time.Date(2026, 11, 27, 23, 30, 0, 0, time.FixedZone("x", -3600)), "press-7")
	if err != nil {
		t.Fatal(err)
	}
	if want := "date=2026-11-28/asset=press-7/part-r1.jsonl"; rel != want {
		t.Fatalf("Partition = %q; want %q", rel, want)
	}
	for _, bad := range []string{"..", "../x", "a/b", ""} {
		if _, err := l.Partition(time.Now(), bad); !errors.Is(err, ErrInvalidPath) {
			t.Errorf("asset %q: err = %v; want ErrInvalidPath", bad, err)
		}
	}
	for _, bad := range []string{"../../etc/passwd.jsonl", "/abs.jsonl", "x.txt", ""} {
		if err := l.Write(bad, []byte(`{}`)); !errors.Is(err, ErrInvalidPath) {
			t.Errorf("Write(%q): err = %v; want ErrInvalidPath", bad, err)
		}
	}
}

// TestWriteIsDurableWhenItReturns checks that every row is in the file before the sync that
// Write waited for, and that Write returns only after that sync.
func TestWriteIsDurableWhenItReturns(t *testing.T) {
	var syncedSize atomic.Int64
	l := newTestLake(t, func(f *os.File) error {
		st, err := f.Stat()
		if err != nil {
			return err
		}
		syncedSize.Store(st.Size())
		return f.Sync()
	})
	rel := "date=2026-11-27/asset=a/part-r1.jsonl"
	for i := range 3 {
		row := fmt.Sprintf(`{"i":%d}`, i)
		if err := l.Write(rel, []byte(row)); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(filepath.Join(l.root, rel))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasSuffix(data, []byte(row+"\n")) {
			t.Fatalf("after Write %d the file is %q", i, data)
		}
		if got := syncedSize.Load(); got != int64(len(data)) {
			t.Fatalf("after Write %d: last sync covered %d bytes; the file has %d", i, got, len(data))
		}
	}
}

// TestConcurrentWritersShareFsync holds the first fsync until n more writers have appended their
// rows, then checks that those n rows took exactly one more fsync.
func TestConcurrentWritersShareFsync(t *testing.T) {
	const n = 8
	var syncs atomic.Int32
	entered := make(chan struct{})
	release := make(chan struct{})
	l := newTestLake(t, func(f *os.File) error {
		if syncs.Add(1) == 1 {
			close(entered)
			<-release
		}
		return f.Sync()
	})
	rel := "date=2026-11-27/asset=a/part-r1.jsonl"
	path := filepath.Join(l.root, rel)
	row := []byte(`{"row":"xxxxxxxxxx"}`)
	var wg sync.WaitGroup
	errs := make(chan error, n+1)
	wg.Add(1)
	go func() { defer wg.Done(); errs <- l.Write(rel, row) }()
	<-entered
	for range n {
		wg.Add(1)
		go func() { defer wg.Done(); errs <- l.Write(rel, row) }()
	}
	// Wait (polling the file, no sleep as synchronisation) until every row is appended.
	want := int64((n + 1) * (len(row) + 1))
	waitFor(t, func() bool { st, err := os.Stat(path); return err == nil && st.Size() == want })
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := syncs.Load(); got != 2 {
		t.Fatalf("%d fsyncs for %d rows; want 2 (one leader, then one shared by the %d that arrived during it)", got, n+1, n)
	}
}

func TestSyncFailureFailsWriteAndReopens(t *testing.T) {
	var fail atomic.Bool
	fail.Store(true)
	l := newTestLake(t, func(f *os.File) error {
		if fail.Swap(false) {
			return errors.New("disk on fire")
		}
		return f.Sync()
	})
	rel := "date=2026-11-27/asset=a/part-r1.jsonl"
	if err := l.Write(rel, []byte(`{"a":1}`)); !errors.Is(err, ErrWrite) {
		t.Fatalf("err = %v; want ErrWrite", err)
	}
	if err := l.Write(rel, []byte(`{"a":2}`)); err != nil {
		t.Fatalf("write after a failed sync: %v", err)
	}
}

func TestTornRowIsRepairedAndNotFound(t *testing.T) {
	l := newTestLake(t, nil)
	rel := "date=2026-11-27/asset=a/part-r1.jsonl"
	path := filepath.Join(l.root, rel)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("{\"id\":\"d/1\"}\n{\"id\":\"d/2"), 0o644); err != nil {
		t.Fatal(err)
	}
	has := func(id string) bool {
		t.Helper()
		ok, err := l.Find(rel, func(line []byte) bool { return strings.Contains(string(line), `"id":"`+id+`"`) })
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !has("d/1") || has("d/2") {
		t.Fatalf("Find: the complete row must be found and the torn one not")
	}
	if err := l.Write(rel, []byte(`{"id":"d/3"}`)); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	if want := "{\"id\":\"d/1\"}\n{\"id\":\"d/2\n{\"id\":\"d/3\"}\n"; string(data) != want {
		t.Fatalf("file = %q; want %q", data, want)
	}
	if !has("d/3") {
		t.Fatal("row written after the repair not found")
	}
	if ok, err := l.Find("date=2026-11-27/asset=b/part-r2.jsonl", func([]byte) bool { return true }); ok || err != nil {
		t.Fatalf("missing file: %v %v; want false, nil", ok, err)
	}
}

func TestCloseThenWrite(t *testing.T) {
	l := newTestLake(t, nil)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := l.Write("date=2026-11-27/asset=a/part-r1.jsonl", []byte(`{}`)); !errors.Is(err, ErrClosed) {
		t.Fatalf("err = %v; want ErrClosed", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestIdleFilesAreClosedBeyondMaxOpen(t *testing.T) {
	l, err := New(Options{Root: t.TempDir(), Replica: "r1", MaxOpen: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := range 5 {
		rel, _ := l.Partition(time.Date(2026, 11, 1+i, 0, 0, 0, 0, time.UTC), "a")
		if err := l.Write(rel, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		if n := l.OpenFiles(); n > 2 {
			t.Fatalf("%d open files; want at most 2", n)
		}
	}
	rel, _ := l.Partition(time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), "a")
	if err := l.Write(rel, []byte(`{"again":1}`)); err != nil {
		t.Fatalf("reopening an evicted file: %v", err)
	}
	data, _ := os.ReadFile(filepath.Join(l.root, rel))
	if string(data) != "{}\n{\"again\":1}\n" {
		t.Fatalf("file %q", data)
	}
}

// TestNoAckBeforeTheFsync: a Write whose row is in the file but whose fsync has not finished has
// not returned (so its message is not acked), and when that fsync fails (what a crash between the
// write and the fsync amounts to for the row) it returns an error, for every writer it covered.
// The fsyncs are counted: the n writers that appended during the first one share one.
func TestNoAckBeforeTheFsync(t *testing.T) {
	const n = 6
	var syncs atomic.Int32
	entered := make(chan struct{})
	release := make(chan error)
	l := newTestLake(t, func(f *os.File) error {
		switch syncs.Add(1) {
		case 1:
			close(entered)
			return <-release
		case 2:
			return <-release
		}
		return f.Sync()
	})
	rel := "date=2026-11-27/asset=a/part-r1.jsonl"
	path := filepath.Join(l.root, rel)
	row := []byte(`{"row":"yyyyyyyy"}`)
	returned := make(chan error, n+1)
	go func() { returned <- l.Write(rel, row) }()
	<-entered
	for range n {
		go func() { returned <- l.Write(rel, row) }()
	}
	want := int64((n + 1) * (len(row) + 1))
	waitFor(t, func() bool { st, err := os.Stat(path); return err == nil && st.Size() == want })
	select {
	case err := <-returned:
		t.Fatalf("a Write returned (%v) before any fsync finished", err)
	default:
	}
	release <- nil // the first fsync (the leader's row) succeeds
	if err := <-returned; err != nil {
		t.Fatalf("leader: %v", err)
	}
	select {
	case err := <-returned:
		t.Fatalf("a Write returned (%v) before the fsync covering its row finished", err)
	default:
	}
	release <- errors.New("power cut")
	for range n {
		if err := <-returned; !errors.Is(err, ErrWrite) {
			t.Fatalf("writer covered by a failed fsync: %v; want ErrWrite", err)
		}
	}
	if got := syncs.Load(); got != 2 {
		t.Fatalf("%d fsyncs for %d rows; want 2", got, n+1)
	}
}
