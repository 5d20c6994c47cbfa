package main

import (
	"log/slog"
	"testing"
	"time"
)

func TestParseConfig(t *testing.T) {
	t.Setenv("PUBSUB_NAME", "ps")
	t.Setenv("REPLICA", "r-env")
	c, err := parseConfig([]string{"-app-port", "7000", "-lake", "/tmp/l", "-log-level", "debug"})
	if err != nil {
		t.Fatal(err)
	}
	if c.appPort != "7000" || c.pubsub != "ps" || c.replica != "r-env" || c.lakeDir != "/tmp/l" ||
		c.logLevel != slog.LevelDebug || c.claimTTL != 20*time.Second || c.telemetryTopic != "devices/+/telemetry" {
		t.Fatalf("config %+v", c)
	}
	for _, bad := range [][]string{
		{"-replica", "../x"},
		{"-log-level", "loud"},
		{"-claim-ttl", "1ms"},
		{"extra"},
	} {
		if _, err := parseConfig(bad); err == nil {
			t.Errorf("parseConfig(%q) accepted", bad)
		}
	}
}
