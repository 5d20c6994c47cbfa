// Package partition names the Dapr topics of a partitioned pubsub.mqttv5 subscription and maps a
// message's ordering key to its partition. It has no dependencies, so an app can import it to
// subscribe to every partition of a filter without pulling in the component.
//
// A partitioned subscription is one MQTT subscription (filter F, shared across replicas when a
// group is set) whose messages the component spreads over K Dapr subscriptions, one per
// partition: the app subscribes to the K Dapr topics "$partition/<i>of<K>/F" (i = 0..K-1).
// daprd 1.16 hands a pluggable component's messages to the app one at a time per subscription,
// so K partition subscriptions are handled K at a time.
package partition

import (
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
)

// Prefix starts the Dapr topic of a partition, as "$share/" starts a shared MQTT filter.
const Prefix = "$partition/"

// Max is the largest partition count accepted: more streams than that only cost daprd memory.
const Max = 256

// ErrInvalid is wrapped by every error Parse returns.
var ErrInvalid = errors.New("invalid partition topic")

// Topic returns the Dapr topic of partition i of k over filter (which may start with
// "$share/<group>/"), for example Topic("devices/+/telemetry", 2, 4) =
// "$partition/2of4/devices/+/telemetry".
func Topic(filter string, i, k int) string {
	return Prefix + strconv.Itoa(i) + "of" + strconv.Itoa(k) + "/" + filter
}

// Topics returns the Dapr topics of all k partitions of filter, partition 0 first: an app
// subscribes to every one of them (with a handler each, or one handler for all).
func Topics(filter string, k int) []string {
	out := make([]string, k)
	for i := range out {
		out[i] = Topic(filter, i, k)
	}
	return out
}

// Parse splits a Dapr topic into its filter and partition. ok is false (and filter the topic
// itself) for a topic without the prefix; err names what is wrong with a malformed one.
func Parse(topic string) (filter string, i, k int, ok bool, err error) {
	rest, found := strings.CutPrefix(topic, Prefix)
	if !found {
		return topic, 0, 1, false, nil
	}
	bad := func(why string) error {
		return fmt.Errorf("%w: %q: %s; want %s<i>of<K>/<filter> with 1 <= K <= %d and 0 <= i < K, e.g. %q",
			ErrInvalid, topic, why, Prefix, Max, Topic("devices/+/telemetry", 0, 4))
	}
	spec, filter, found := strings.Cut(rest, "/")
	if !found || filter == "" {
		return "", 0, 0, false, bad("no filter after the partition")
	}
	is, ks, found := strings.Cut(spec, "of")
	if !found {
		return "", 0, 0, false, bad(fmt.Sprintf("%q is not <i>of<K>", spec))
	}
	i, ierr := strconv.Atoi(is)
	k, kerr := strconv.Atoi(ks)
	switch {
	case ierr != nil || kerr != nil || is != strconv.Itoa(i) || ks != strconv.Itoa(k):
		return "", 0, 0, false, bad(fmt.Sprintf("%q is not <i>of<K> in decimal digits", spec))
	case k < 1 || k > Max:
		return "", 0, 0, false, bad(fmt.Sprintf("partition count %d out of range", k))
	case i < 0 || i >= k:
		return "", 0, 0, false, bad(fmt.Sprintf("partition index %d out of range for %d partitions", i, k))
	}
	return filter, i, k, true, nil
}

// Hash is the partitioning hash of an ordering key (FNV-1a, 32 bits): stable across processes,
// restarts and replicas.
func Hash(key string) uint32 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return h.Sum32()
}

// Of returns the partition of key among k partitions: Hash(key) mod k. With the default
// ordering, the key is the MQTT topic.
func Of(key string, k int) int { return int(Hash(key) % uint32(k)) }
