// Command mqdapr-bench runs the side-by-side benchmarks of bench/ and writes BENCHMARKS.md. Run it
// from the repository root (`make bench-harness` does):
//
//	go run ./bench/cmd/mqdapr-bench [-out BENCHMARKS.md] [-quick] [-rounds N] [-suites pubsub,state,connector] [-contenders noop,in-memory,...] [-pubsub-b path]
//
// BENCH_QUICK=1 is -quick. Ctrl-C stops the processes of the current round and writes the report
// with what was measured so far.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/mqdapr/mqdapr/bench"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "mqdapr-bench:", err)
		os.Exit(1)
	}
}

func run() error {
	fs := flag.NewFlagSet("mqdapr-bench", flag.ContinueOnError)
	out := fs.String("out", "BENCHMARKS.md", "report to write (empty: none)")
	quick := fs.Bool("quick", os.Getenv("BENCH_QUICK") == "1", "one round with few messages: a smoke run (env BENCH_QUICK=1)")
	rounds := fs.Int("rounds", 0, "rounds per contender (0: 3, or 1 with -quick)")
	suites := fs.String("suites", "", "comma-separated: pubsub, state, connector (empty: all)")
	contenders := fs.String("contenders", "", "comma-separated contender ids: noop, in-memory, mqtt3-mosquitto, mqttv5-mosquitto, mqttv5-mqbroker, mqttv5-mqbroker-disk, mqttv5-mqbroker-part4, mqttv5-mqbroker-disk-part4, redis, redis-aof, mqttkv, mqttkv-disk, mqttkv-base (with MQDAPR_BENCH_STATEKV_BASE=<a state-kv binary>), connector, connector-part<K> (see -connector-partitions), and connector@<label>, connector-part<K>@<label> of -connector-apps (empty: all)")
	note := fs.String("note", os.Getenv("BENCH_NOTE"), "a line for the report's header, e.g. what else ran on the machine (env BENCH_NOTE)")
	pubsubB := fs.String("pubsub-b", "", "a second pubsub-mqtt5 binary (e.g. built from main) to run beside the one built here: every selected mqttv5 contender also runs with it as <id>-b, alternated round by round")
	apps := fs.String("connector-apps", "", "comma-separated label=binary: other builds of the connector app, each run as contenders connector@label and connector-part4@label (e.g. main=/tmp/app-main)")
	connParts := fs.String("connector-partitions", "1,8", "comma-separated -telemetry-partitions counts of the connector runs (contenders connector for 1, connector-part<K> for K)")
	daprd115 := fs.Bool("daprd115", true, "also run on daprd 1.15.0 when scripts/daprd.sh has it (never builds it)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	if _, err := os.Stat("scripts/daprd.sh"); err != nil {
		return fmt.Errorf("run from the repository root (scripts/daprd.sh not found in %s)", root)
	}
	if *pubsubB != "" {
		if *pubsubB, err = filepath.Abs(*pubsubB); err != nil {
			return err
		}
		if _, err := os.Stat(*pubsubB); err != nil {
			return fmt.Errorf("-pubsub-b: %w (want a pubsub-mqtt5 binary, e.g. built with go build -o /tmp/main-bin/ ./cmd/pubsub-mqtt5 in a checkout of main)", err)
		}
	}
	split := func(s string) []string {
		if s == "" {
			return nil
		}
		return strings.Split(s, ",")
	}
	connectorApps := map[string]string{}
	for _, a := range split(*apps) {
		label, bin, ok := strings.Cut(a, "=")
		if !ok || label == "" || bin == "" {
			return fmt.Errorf("-connector-apps: %q; want label=binary", a)
		}
		if _, err := os.Stat(bin); err != nil {
			return fmt.Errorf("-connector-apps: %s: %w", label, err)
		}
		connectorApps[label] = bin
	}
	var partitions []int
	for _, p := range split(*connParts) {
		k, err := strconv.Atoi(p)
		if err != nil || k < 1 || k > 256 {
			return fmt.Errorf("-connector-partitions: %q; want integers 1…256, e.g. 1,4,8", p)
		}
		partitions = append(partitions, k)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	command := "go run ./bench/cmd/mqdapr-bench " + strings.Join(os.Args[1:], " ")
	if os.Getenv("MAKELEVEL") != "" { // the Makefile's one line, which installs what is missing first
		command = "make bench-harness"
	}
	if *quick && os.Getenv("BENCH_QUICK") == "1" {
		command = "BENCH_QUICK=1 " + command
	}
	return bench.Run(ctx, bench.Config{
		Root: root, Out: *out, Quick: *quick, Rounds: *rounds, Suites: split(*suites), Contenders: split(*contenders),
		Daprd115: *daprd115, PubsubB: *pubsubB, ConnectorApps: connectorApps, ConnectorPartitions: partitions, Command: strings.TrimSpace(command), Note: *note, Log: os.Stderr,
	})
}
