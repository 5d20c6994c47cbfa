package kvservice

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"

	"github.com/mqdapr/mqdapr/broker/statestore"
)

// startKVBroker runs the mqbroker binary with the key-value store persisting every key in dataDir
// and returns the process and its address.
func startKVBroker(t *testing.T, bin, dataDir string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(bin, "-addr", "127.0.0.1:0", "-data-dir", dataDir, "-log-level", "warn", "-kv-persist-all")
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err, "the broker did not print its address")
	addr := strings.Trim(strings.TrimPrefix(strings.TrimSpace(line), "listening "), "[]")
	require.NotEmpty(t, addr, "broker printed %q", line)
	return cmd, addr
}

func respArray(args ...string) string {
	s := fmt.Sprintf("*%d\r\n", len(args))
	for _, a := range args {
		s += fmt.Sprintf("$%d\r\n%s\r\n", len(a), a)
	}
	return s
}

// Every SET the store answered +OK survives kill -9 of the broker process: four clients write keys,
// four SETs in flight on each connection (so that they share group commits), while the broker is
// killed, and after a restart on the same data directory each key answered before the kill reads
// back with its value.
func TestKill9KeepsAnsweredSets(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills a broker process; run without -short")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "mqbroker")
	build := exec.Command("go", "build", "-o", bin, "../../cmd/mqbroker")
	build.Stderr = os.Stderr
	require.NoError(t, build.Run())
	dataDir := filepath.Join(dir, "data")
	cmd, addr := startKVBroker(t, bin, dataDir)

	var mu sync.Mutex
	answered := map[string]string{} // key -> value, for each SET answered +OK
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(answered) }
	valueOf := func(key string) string { return "v-" + key }
	var wg, readers sync.WaitGroup
	stop := make(chan struct{}) // ends the response readers once the broker is gone
	for w := range 4 {
		cl := dialAddr(t, addr, fmt.Sprint("writer", w))
		cl.subscribe(t, responseTopic(cl.id))
		readers.Add(1)
		go func() { // records each +OK by its correlation data, the key
			defer readers.Done()
			record := func(p *paho.Publish) {
				key := string(p.Properties.CorrelationData)
				if p.Properties.User.Get("__stat") != "200" || string(p.Payload) != "+OK\r\n" {
					t.Errorf("SET %s answered %q (%s)", key, p.Payload, p.Properties.User.Get("__stat"))
					return
				}
				mu.Lock()
				answered[key] = valueOf(key)
				mu.Unlock()
			}
			for {
				select {
				case p := <-cl.msgs:
					record(p)
				case <-stop:
					for {
						select {
						case p := <-cl.msgs:
							record(p)
						default:
							return
						}
					}
				}
			}
		}()
		for g := range 4 { // four SETs in flight on each connection
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					key := fmt.Sprintf("k%d-%d-%d", w, g, i)
					props := &paho.PublishProperties{ResponseTopic: responseTopic(cl.id), CorrelationData: []byte(key)}
					props.User.Add("__ts", ts0)
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					_, err := cl.Publish(ctx, &paho.Publish{Topic: statestore.RequestTopic, QoS: 1, Payload: []byte(respArray("SET", key, valueOf(key))), Properties: props})
					cancel()
					if err != nil {
						t.Logf("writer %d/%d: %v", w, g, err)
						return // the broker is gone
					}
				}
			}()
		}
	}
	require.Eventually(t, func() bool { return count() >= 400 }, 30*time.Second, 10*time.Millisecond)
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()
	wg.Wait()
	close(stop)
	readers.Wait()

	_, addr = startKVBroker(t, bin, dataDir)
	reader := dialAddr(t, addr, "reader")
	reader.subscribe(t, responseTopic(reader.id))
	mu.Lock()
	defer mu.Unlock()
	for key, val := range answered {
		p := reader.call(t, respArray("GET", key), "__ts", ts0)
		require.Equal(t, fmt.Sprintf("$%d\r\n%s\r\n", len(val), val), string(p.Payload), "key %s answered +OK before the kill", key)
	}
	t.Logf("%d answered SETs read back after kill -9", len(answered))
}
