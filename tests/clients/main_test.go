// Package clients is the client matrix: real third-party MQTT clients (Mosquitto's command-line
// clients, Eclipse Paho's 3.1.1 Go client, Dapr's in-tree pubsub.mqtt3 inside a real daprd) against
// mqdapr's embedded broker, each behaviour also run against Mosquitto 2.0.11 as the reference that
// proves the test itself (see brokers_test.go for which broker runs which protocol version).
//
//	go test -race -count=1 ./tests/clients/...
//	MQDAPR_CLIENTS_BROKERS=mqbroker go test -race -count=1 ./tests/clients/...   (one broker only)
//	MQDAPR_CLIENTS_MQBROKER=/path/to/mqbroker go test ...   (another mqbroker build instead of ./cmd/mqbroker)
//
// The README's "Client matrix" table lists what each test checks and its result.
package clients

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// bins are the programs the tests run, found or built once by TestMain.
var bins struct {
	dir      string // temporary folder holding the built mqbroker
	mqbroker string
	daprd    string // "" when scripts/daprd.sh --cached has none (the daprd test skips or, in CI, fails)
	root     string // the repository
}

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "mqdapr-clients-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	bins.dir = dir
	bins.root, _ = filepath.Abs("../..")
	// mqbroker runs as a process of its own so that a test can kill -9 it and start it again on
	// the same data directory, as a device fleet would see a broker crash.
	build := exec.Command("go", "build", "-o", dir+"/", "./cmd/mqbroker")
	build.Dir, build.Stdout, build.Stderr = bins.root, os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build mqbroker:", err)
		return 1
	}
	bins.mqbroker = filepath.Join(dir, "mqbroker")
	if other := os.Getenv("MQDAPR_CLIENTS_MQBROKER"); other != "" {
		bins.mqbroker = other // another mqbroker build, e.g. a branch's, against the same matrix
	}
	// --cached never builds: `make test` runs scripts/daprd.sh (which builds it once) before the tests.
	if out, err := exec.Command(filepath.Join(bins.root, "scripts", "daprd.sh"), "--cached").Output(); err == nil {
		bins.daprd = strings.TrimSpace(string(out))
	}
	return m.Run()
}

// needProgram returns the path of a third-party program the matrix drives. When it is missing the
// test is skipped with how to install it, except in CI (CI set), where it fails.
func needProgram(t testing.TB, name, how string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s not found; %s", name, how)
	}
	t.Skipf("%s not found: %s to enable this test", name, how)
	return ""
}
