// Command devicesim publishes realistic device telemetry (JSON with sequence numbers) through an
// MQTT v5 broker at a chosen rate, after publishing the retained asset configuration, for the
// sample connector app (app/). It prints a summary at the end.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	var cfg simConfig
	fs := flag.NewFlagSet("devicesim", flag.ExitOnError)
	broker := fs.String("broker", "mqtt://127.0.0.1:1883", "MQTT v5 broker URL (mqtt://, tcp://, mqtts://; user:password@ allowed, -username/-password-file keep the password off the command line)")
	username := fs.String("username", "", "MQTT user name")
	passwordFile := fs.String("password-file", "", "`FILE` holding the MQTT password (white space around it trimmed); needs -username")
	clientID := fs.String("client-id", "devicesim", "MQTT client id (its persistent session is reused across runs)")
	fs.IntVar(&cfg.devices, "devices", 5, "number of devices")
	fs.IntVar(&cfg.assets, "assets", 2, "number of assets the devices are spread over")
	fs.Float64Var(&cfg.rate, "rate", 10, "messages per second over all devices; 0: as fast as the broker acks")
	fs.Int64Var(&cfg.count, "count", 100, "telemetry messages to publish; 0: until -duration or Ctrl-C")
	fs.DurationVar(&cfg.duration, "duration", 0, "stop after this long; 0: no limit")
	fs.StringVar(&cfg.topicPrefix, "topic-prefix", "devices", "telemetry topic is <prefix>/<deviceId>/telemetry")
	fs.StringVar(&cfg.configPrefix, "config-prefix", "config/assets", "retained asset configuration topic is <prefix>/<assetId>")
	fs.BoolVar(&cfg.publishConfig, "publish-config", true, "publish the retained asset configuration first")
	fs.BoolVar(&cfg.messageID, "message-id", false, "identify messages by a message-id user property instead of seq in the payload")
	fs.Int64Var(&cfg.invalidEvery, "invalid-every", 0, "make every n-th message invalid (dead-letter demo); 0: never")
	fs.Int64Var(&cfg.seqStart, "seq-start", -1, "first sequence number; -1: the current Unix time in µs, so that a later run never reuses a number (while each device stays under 1,000,000 msg/s)")
	fs.IntVar(&cfg.inflight, "inflight", 1, "devices that may have a publish awaiting the broker's acknowledgement at once (each device's readings stay in order; at most -devices); 1: one publish at a time")
	seed := fs.Uint64("seed", 1, "random seed of the simulated values")
	_ = fs.Parse(os.Args[1:])
	cfg.seed = *seed
	if cfg.seqStart < 0 {
		cfg.seqStart = time.Now().UnixMicro() // < 2^53 until the year 2255

	}
	if cfg.devices < 1 || cfg.assets < 1 || cfg.count < 0 || cfg.rate < 0 || cfg.inflight < 1 {
		fmt.Fprintln(os.Stderr, "devicesim: -devices, -assets and -inflight must be ≥ 1, -count and -rate ≥ 0")
		os.Exit(2)
	}

	creds, err := loadCredentials(*username, *passwordFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "devicesim:", err)
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	pub, err := dial(dctx, *broker, *clientID, creds, time.Hour)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "devicesim:", err)
		os.Exit(1)
	}
	s, err := simulate(ctx, cfg, pub, time.Now)
	cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
	_ = pub.Close(cctx)
	ccancel()
	s.print(os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "devicesim:", err)
		os.Exit(1)
	}
}
