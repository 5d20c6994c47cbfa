package main

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/stretchr/testify/require"

	"github.com/mqdapr/mqdapr/internal/testutil"
)

// The v5 flags reach the broker: Topic Alias Maximum and Server Keep Alive in CONNACK, and
// -deny-subscribe as SUBACK 0x87 for that filter alone (MQTT v5 §3.9.3), -deny-publish as PUBACK
// 0x87 (§3.4.2.1), against the mqbroker process.
func TestV5FlagsProcess(t *testing.T) {
	broker := exec.Command(os.Args[0], "-addr", "127.0.0.1:0", "-tls-addr", "", "-data-dir", filepath.Join(t.TempDir(), "data"), "-log-level", "error",
		"-topic-alias-max", "3", "-max-keepalive", "5", "-overlap-delivery", "single",
		"-deny-subscribe", "secret/#", "-deny-subscribe", "$SYS/#", "-deny-publish", "ro/#")
	broker.Env = append(os.Environ(), helperEnv+"=1")
	out, err := broker.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, broker.Start())
	exited := make(chan struct{})
	go func() { _ = broker.Wait(); close(exited) }()
	t.Cleanup(func() { testutil.Stop(broker.Process, exited, syscall.SIGKILL, 0) })
	line, err := bufio.NewReader(out).ReadString('\n') // "listening [127.0.0.1:port]"
	require.NoError(t, err)
	addr := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(line), "listening ["), "]")

	nc, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(nc)
	read := func() *packets.ControlPacket {
		cp, err := packets.ReadPacket(br)
		require.NoError(t, err)
		return cp
	}
	cp := packets.NewControlPacket(packets.CONNECT)
	c := cp.Content.(*packets.Connect)
	c.ClientID, c.CleanStart, c.KeepAlive = "flags", true, 0
	_, err = cp.WriteTo(nc)
	require.NoError(t, err)
	ack := read().Content.(*packets.Connack)
	require.Equal(t, byte(0), ack.ReasonCode)
	require.Equal(t, uint16(3), *ack.Properties.TopicAliasMaximum)
	require.Equal(t, uint16(5), *ack.Properties.ServerKeepAlive) // asked 0 [MQTT-3.2.2-21]

	sub := packets.NewControlPacket(packets.SUBSCRIBE)
	s := sub.Content.(*packets.Subscribe)
	s.PacketID = 1
	s.Subscriptions = []packets.SubOptions{{Topic: "open/#", QoS: 1}, {Topic: "secret/a", QoS: 1}, {Topic: "$SYS/x", QoS: 0}}
	_, err = sub.WriteTo(nc)
	require.NoError(t, err)
	require.Equal(t, []byte{1, 0x87, 0x87}, read().Content.(*packets.Suback).Reasons)

	pub := &packets.Publish{Topic: "ro/x", QoS: 1, PacketID: 2, Properties: &packets.Properties{}}
	_, err = pub.WriteTo(nc)
	require.NoError(t, err)
	require.Equal(t, byte(0x87), read().Content.(*packets.Puback).ReasonCode)
}

// Bad values name the flag and what is accepted; repeated deny flags replace the file's list.
func TestV5FlagsParse(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-topic-alias-max", "70000"}, `invalid value "70000" for flag -topic-alias-max: want 0..65535`},
		{[]string{"-max-keepalive", "-1"}, `invalid value "-1" for flag -max-keepalive: want 0..65535`},
		{[]string{"-overlap-delivery", "both"}, `overlap delivery "both": want "per-subscription" or "single"`},
		{[]string{"-deny-subscribe", "a/#/b"}, `deny rule "a/#/b" is not a valid topic filter`},
	} {
		err := run(append([]string{"-addr", "127.0.0.1:0", "-tls-addr", "", "-kv=false"}, c.args...))
		require.ErrorContains(t, err, c.want, c.args)
	}
	f := filepath.Join(t.TempDir(), "mqbroker.json")
	require.NoError(t, os.WriteFile(f, []byte(`{"deny_subscribe":["a/#","b/#"],"deny_publish":["p/#"],"overlap_delivery":"single","topic_alias_out":4}`), 0o600))
	cfg, err := parseConfig([]string{"-config", f, "-deny-subscribe", "c/#", "-deny-subscribe", "d/#"})
	require.NoError(t, err)
	require.Equal(t, []string{"c/#", "d/#"}, cfg.DenySubscribe) // the flags replace the file's list
	require.Equal(t, []string{"p/#"}, cfg.DenyPublish)
	require.Equal(t, "single", cfg.OverlapDelivery)
	require.Equal(t, uint16(4), cfg.TopicAliasOut)
	cfg, err = parseConfig(nil)
	require.NoError(t, err)
	require.Equal(t, "per-subscription", cfg.OverlapDelivery)
	require.Equal(t, uint16(16), cfg.TopicAliasMax)
	require.Nil(t, cfg.DenySubscribe)
}
