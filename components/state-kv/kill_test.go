package statekv

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dapr/components-contrib/state"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const killHelperEnv = "MQDAPR_STATEKV_KILL_HELPER"

// runKillHelper is a component in a child process that starts an ETag write and stops for ever at
// the stage named by KILL_STAGE ("read": version checked; "fenced": key fenced with its lease),
// announcing it on stdout, so that the parent can kill -9 it there.
func runKillHelper() int {
	p := props(os.Getenv("KILL_URL"), "victim", "lockTTL", "1s", "lockMargin", "500ms")
	s := New(testLog)
	stage := os.Getenv("KILL_STAGE")
	pause := func(key string) {
		fmt.Printf("PAUSED %s %s\n", stage, key)
		select {}
	}
	if stage == "read" {
		s.hooks.etagRead = pause
	} else {
		s.hooks.etagFenced = pause
	}
	if err := s.Init(context.Background(), state.Metadata{Base: metadataBase(p)}); err != nil {
		fmt.Println("ERR", err)
		return 1
	}
	etag := os.Getenv("KILL_ETAG")
	err := s.Set(context.Background(), &state.SetRequest{Key: "k", Value: []byte("from-victim"), ETag: &etag})
	fmt.Println("ERR set returned", err)
	return 1
}

// A component killed with kill -9 in the middle of an ETag write leaves the key with its old value
// (never missing, never half-written), and other writers proceed once its lease expires.
func TestComponentKilledMidETagWrite(t *testing.T) {
	for _, stage := range []string{"read", "fenced"} {
		t.Run(stage, func(t *testing.T) {
			kb := startBroker(t, true)
			s := newStore(t, props(kb.url(), "survivor"))
			set(t, s, "k", "v0")
			etag := get(t, s, "k").ETag
			require.NotNil(t, etag)

			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), killHelperEnv+"=1", "KILL_URL="+kb.url(), "KILL_STAGE="+stage, "KILL_ETAG="+*etag)
			out, err := cmd.StdoutPipe()
			require.NoError(t, err)
			require.NoError(t, cmd.Start())
			paused := make(chan string, 1)
			go func() {
				sc := bufio.NewScanner(out)
				for sc.Scan() {
					if l := sc.Text(); strings.HasPrefix(l, "PAUSED") || strings.HasPrefix(l, "ERR") {
						paused <- l
					}
				}
			}()
			select {
			case l := <-paused:
				require.True(t, strings.HasPrefix(l, "PAUSED "+stage), l)
			case <-time.After(20 * time.Second):
				_ = cmd.Process.Kill()
				t.Fatal("helper did not reach the stage")
			}
			require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
			_ = cmd.Wait()

			got := get(t, s, "k")
			assert.Equal(t, "v0", string(got.Data), "the old value, whole")
			// Another writer gets through once the dead writer's lease (1 s) expires.
			start := time.Now()
			require.NoError(t, s.Set(t.Context(), &state.SetRequest{Key: "k", Value: []byte("v1"), ETag: got.ETag}))
			assert.Less(t, time.Since(start), 5*time.Second)
			require.NoError(t, s.Set(t.Context(), &state.SetRequest{Key: "k", Value: []byte("v2")}))
			assert.Equal(t, "v2", string(get(t, s, "k").Data))
			err = s.Set(t.Context(), &state.SetRequest{Key: "k", Value: []byte("stale"), ETag: etag})
			require.Error(t, err, "the ETag read before the kill is stale now")
		})
	}
}
