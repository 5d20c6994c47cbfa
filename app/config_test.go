package main

import (
	"log/slog"
	"strings"
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
		c.logLevel != slog.LevelDebug || c.claimTTL != 20*time.Second || c.telemetryTopic != "devices/+/telemetry" || c.partitions != 1 {
		t.Fatalf("config %+v", c)
	}
	for _, bad := range [][]string{
		{"-replica", "../x"},
		{"-log-level", "loud"},
		{"-claim-ttl", "1ms"},
		{"extra"},
		{"-telemetry-partitions", "0"},
		{"-telemetry-partitions", "257"},
	} {
		if _, err := parseConfig(bad); err == nil {
			t.Errorf("parseConfig(%q) accepted", bad)
		}
	}
}

func TestParseConfigPartitions(t *testing.T) {
	t.Setenv("TELEMETRY_PARTITIONS", "8")
	if c, err := parseConfig(nil); err != nil || c.partitions != 8 {
		t.Fatalf("TELEMETRY_PARTITIONS=8: partitions %d, err %v", c.partitions, err)
	}
	t.Setenv("TELEMETRY_PARTITIONS", "eight")
	if _, err := parseConfig(nil); err == nil || !strings.Contains(err.Error(), "TELEMETRY_PARTITIONS") {
		t.Fatalf("TELEMETRY_PARTITIONS=eight: err %v; want one naming it", err)
	}
}
