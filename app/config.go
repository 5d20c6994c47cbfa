package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/mqdapr/mqdapr/app/connector"
	"github.com/mqdapr/mqdapr/app/lake"
)

// config is the app's configuration: flags, each defaulting to an environment variable.
type config struct {
	appHost, appPort string
	daprGRPCPort     string
	healthAddr       string
	pprofAddr        string
	pubsub           string
	stateStore       string
	telemetryTopic   string
	partitions       int
	configTopic      string
	deadLetterTopic  string
	sharedGroup      string
	lakeDir          string
	replica          string
	claimTTL         time.Duration
	dedupTTL         time.Duration
	shutdownTimeout  time.Duration
	logLevel         slog.Level
}

// defaultHealthAddr is where /healthz is served unless HEALTH_ADDR or -health-addr says otherwise.
const defaultHealthAddr = "127.0.0.1:8081"

func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

// envInt is env for an integer flag; a malformed value is kept as -1 so that validation names it.
func envInt(name string, def int) int {
	v, ok := os.LookupEnv(name)
	if !ok {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return -1
	}
	return n
}

func parseConfig(args []string) (config, error) {
	host, _ := os.Hostname()
	var c config
	fs := flag.NewFlagSet("app", flag.ContinueOnError)
	fs.StringVar(&c.appHost, "app-host", env("APP_HOST", "127.0.0.1"), "address the gRPC app server listens on (env APP_HOST)")
	fs.StringVar(&c.appPort, "app-port", env("APP_PORT", "6002"), "gRPC app port that daprd calls, daprd --app-port with --app-protocol grpc (env APP_PORT)")
	fs.StringVar(&c.daprGRPCPort, "dapr-grpc-port", env("DAPR_GRPC_PORT", "50001"), "daprd gRPC API port on 127.0.0.1 (env DAPR_GRPC_PORT)")
	fs.StringVar(&c.healthAddr, "health-addr", env("HEALTH_ADDR", defaultHealthAddr), "HTTP address of /healthz and /metrics (env HEALTH_ADDR)")
	fs.StringVar(&c.pprofAddr, "pprof-addr", env("PPROF_ADDR", ""), "HTTP address of net/http/pprof with block and mutex profiling on, for profiling; empty: off (env PPROF_ADDR)")
	fs.StringVar(&c.pubsub, "pubsub", env("PUBSUB_NAME", "mqtt"), "pub/sub component name (env PUBSUB_NAME)")
	fs.StringVar(&c.stateStore, "statestore", env("STATESTORE_NAME", "kv"), "state store component name (env STATESTORE_NAME)")
	fs.StringVar(&c.telemetryTopic, "telemetry-topic", env("TELEMETRY_TOPIC", "devices/+/telemetry"), "MQTT filter of telemetry; the level at + is the device id (env TELEMETRY_TOPIC)")
	fs.IntVar(&c.partitions, "telemetry-partitions", envInt("TELEMETRY_PARTITIONS", 1), "telemetry is subscribed as this many partitions of pubsub.mqttv5 ($partition/<i>of<K>/<filter>), handled in parallel; 1: one plain subscription (env TELEMETRY_PARTITIONS)")
	fs.StringVar(&c.configTopic, "config-topic", env("CONFIG_TOPIC", "config/assets/+"), "MQTT filter of retained asset configuration; the level at + is the asset id (env CONFIG_TOPIC)")
	fs.StringVar(&c.deadLetterTopic, "deadletter-topic", env("DEADLETTER_TOPIC", "connector/rejected"), "topic of rejected messages (env DEADLETTER_TOPIC)")
	fs.StringVar(&c.sharedGroup, "shared-group", env("SHARED_GROUP", "connector"), "shared subscription group of telemetry; empty: not shared (env SHARED_GROUP)")
	fs.StringVar(&c.lakeDir, "lake", env("LAKE_DIR", "lake"), "data lake folder (env LAKE_DIR)")
	fs.StringVar(&c.replica, "replica", env("REPLICA", host), "replica name, unique and stable: part of file names and dedup owners (env REPLICA; default host name)")
	fs.DurationVar(&c.claimTTL, "claim-ttl", 20*time.Second, "how long another replica's pending dedup claim is respected before take-over")
	fs.DurationVar(&c.dedupTTL, "dedup-ttl", 7*24*time.Hour, "how long dedup records are kept; 0 for ever")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 30*time.Second, "how long in-flight deliveries may take at shutdown")
	level := fs.String("log-level", env("LOG_LEVEL", "info"), "debug, info, warn or error (env LOG_LEVEL)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if err := c.logLevel.UnmarshalText([]byte(*level)); err != nil {
		return c, fmt.Errorf("-log-level %q: want debug, info, warn or error", *level)
	}
	if !lake.ValidName(c.replica) {
		return c, fmt.Errorf("-replica %q: want 1-128 of A-Z a-z 0-9 . _ - starting with a letter or digit", c.replica)
	}
	if c.partitions < 1 || c.partitions > connector.MaxPartitions {
		return c, fmt.Errorf("-telemetry-partitions (or TELEMETRY_PARTITIONS) %d: want an integer 1…%d", c.partitions, connector.MaxPartitions)
	}
	if c.claimTTL < 2*time.Second {
		return c, fmt.Errorf("-claim-ttl %s: want at least 2s", c.claimTTL)
	}
	if c.dedupTTL < 0 || c.shutdownTimeout <= 0 {
		return c, fmt.Errorf("-dedup-ttl must be ≥ 0 and -shutdown-timeout > 0")
	}
	return c, nil
}
