package bench

import (
	"fmt"
	"os/exec"
	"runtime"
	"sort"
	"strings"
	"time"
)

// report renders BENCHMARKS.md.
func (h *harness) report(started time.Time, load0, load1 string) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("# Benchmarks\n\n")
	w("Written by the harness in bench/ (`make bench-harness`); figures, never assertions. Every contender runs\n")
	w("through the same daprd binary in a fresh stack of real processes on loopback, the contenders\n")
	w("alternated round by round; each figure is the median of the rounds with the range (min–max).\n")
	w("Ratios are of medians: to the named peer and to the no-op pluggable floor (bench/noop: a\n")
	w("components-go-sdk pub/sub and state store that answer at once and keep nothing, i.e. what daprd\n")
	w("and the socket hop cost by themselves). CPU is user + system time by process over the measured\n")
	w("step (/proc/<pid>/stat) divided by the messages or operations; memory is VmRSS (/proc/<pid>/status)\n")
	w("after warm-up (idle), the highest sample every 200 ms under load and VmHWM (peak) at the end, MiB.\n\n")
	mode := fmt.Sprintf("full, %d rounds", h.cfg.rounds())
	if h.cfg.Quick {
		mode = fmt.Sprintf("QUICK (smoke run, few messages: not figures), %d round(s)", h.cfg.rounds())
	}
	w("- Run: %s UTC, %s, %s\n", started.UTC().Format("2006-01-02 15:04"), time.Since(started).Round(time.Second), mode)
	w("- Command: `%s`\n", h.cfg.Command)
	w("- Machine: %s; load average (1, 5, 15 min) %s at the start, %s at the end\n", machine(), load0, load1)
	w("- Versions: %s; %s; %s; %s; mqdapr %s\n", h.daprdVersions(), runtime.Version(), firstLine(h.tools.mosquitto, "-h"), firstLine(h.tools.redis, "--version"), gitDescribe(h.cfg.Root))
	w("- Sizes: 64-byte payloads; pub/sub %d messages per run from %d concurrent go-sdk gRPC publishers to a go-sdk gRPC subscriber app (ack after its handler), then %d one at a time from one publisher; state %d clients, Set/Get %d, ETag cycles %d, BulkGet(100) %d per run; the connector %d readings from %d devices\n",
		h.cfg.pubsubMessages(), publishers, h.cfg.singleMessages(), publishers, h.cfg.stateOps("set"), h.cfg.stateOps("etag"), h.cfg.stateOps("bulkget"), h.cfg.connectorReadings(), publishers)
	if h.cfg.Note != "" {
		w("- Note: %s\n", h.cfg.Note)
	}
	for _, n := range h.notes {
		w("- %s\n", n)
	}
	w("\n")
	if h.cfg.wants(h.cfg.Suites, "pubsub") {
		h.pubsubReport(&b)
	}
	if h.cfg.wants(h.cfg.Suites, "state") {
		h.stateReport(&b)
	}
	if h.cfg.wants(h.cfg.Suites, "connector") {
		h.connectorReport(&b)
	}
	h.goalsReport(&b)
	if len(h.res.fails) > 0 {
		w("## Failed or skipped runs\n\n")
		keys := make([]string, 0, len(h.res.fails))
		for k := range h.res.fails {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			for _, f := range h.res.fails[k] {
				w("- %s: %s\n", k, f)
			}
		}
		w("\n")
	}
	return b.String()
}

func (h *harness) daprdVersions() string {
	v := "daprd " + h.daprd.version
	if h.daprd115 != nil {
		v += " and " + h.daprd115.version
	}
	return v
}

// cell is "median (min–max)" of a metric, "—" without samples.
func (h *harness) cell(key, metric string, digits int) string {
	xs := h.res.get(key, metric)
	if len(xs) == 0 {
		return "—"
	}
	med, lo, hi := median(xs)
	if len(xs) == 1 {
		return num(med, digits)
	}
	return fmt.Sprintf("%s (%s–%s)", num(med, digits), num(lo, digits), num(hi, digits))
}

// ratio is median(key)/median(ref) of a metric, "—" when either is missing.
func (h *harness) ratio(key, ref, metric string) string {
	a, b := h.res.get(key, metric), h.res.get(ref, metric)
	if len(a) == 0 || len(b) == 0 {
		return "—"
	}
	ma, _, _ := median(a)
	mb, _, _ := median(b)
	if mb == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f×", ma/mb)
}

// perProcess is "name median · name median …" of prefix/<process> metrics, with the total.
func (h *harness) perProcess(key, prefix string, digits int, total bool) string {
	names := h.res.byProcess(key, prefix)
	if len(names) == 0 {
		return "—"
	}
	var parts []string
	sum := 0.0
	for _, n := range names {
		med, _, _ := median(h.res.get(key, prefix+"/"+n))
		sum += med
		parts = append(parts, fmt.Sprintf("%s %s", n, num(med, digits)))
	}
	s := strings.Join(parts, " · ")
	if total {
		s = fmt.Sprintf("**%s**: %s", num(sum, digits), s)
	}
	return s
}

// memory is "name idle→load" per process, MiB.
func (h *harness) memory(key string) string {
	names := h.res.byProcess(key, "rss-load")
	if len(names) == 0 {
		return "—"
	}
	var parts []string
	for _, n := range names {
		idle, _, _ := median(h.res.get(key, "rss-idle/"+n))
		load, _, _ := median(h.res.get(key, "rss-load/"+n))
		part := fmt.Sprintf("%s %.0f→%.0f", n, idle, load)
		if peak := h.res.get(key, "rss-peak/"+n); len(peak) > 0 {
			m, _, _ := median(peak)
			part += fmt.Sprintf(" (peak %.0f)", m)
		}
		parts = append(parts, part)
	}
	return strings.Join(parts, " · ")
}

func (h *harness) pubsubReport(b *strings.Builder) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	for _, d := range h.daprds() {
		floor, peer := h.key("noop", d), h.key("mqtt3-mosquitto", d)
		w("## Pub/sub through daprd %s\n\n", d.version)
		w("Delivered messages per second (first publish to last delivery), %d publishers; peer: pubsub.mqtt3 on the same Mosquitto.\n\n", publishers)
		w("| contender | CloudEvents msg/s | × peer | × floor | raw payloads msg/s | × peer | × floor |\n|---|---|---|---|---|---|---|\n")
		for _, c := range h.pubsubContenders() {
			k := h.key(c.id, d)
			if len(h.res.get(k, "msgs/ce")) == 0 && len(h.res.get(k, "msgs/raw")) == 0 {
				continue
			}
			w("| %s | %s | %s | %s | %s | %s | %s |\n", c.title, h.cell(k, "msgs/ce", 0), h.ratio(k, peer, "msgs/ce"), h.ratio(k, floor, "msgs/ce"),
				h.cell(k, "msgs/raw", 0), h.ratio(k, peer, "msgs/raw"), h.ratio(k, floor, "msgs/raw"))
		}
		w("\nOne publisher, one publish at a time (CloudEvents): publish calls per second and the latency of one call, ms.\n\n")
		w("| contender | msg/s | p50 ms | p99 ms | p50 × floor |\n|---|---|---|---|---|\n")
		for _, c := range h.pubsubContenders() {
			k := h.key(c.id, d)
			if len(h.res.get(k, "single/msgs")) == 0 {
				continue
			}
			w("| %s | %s | %s | %s | %s |\n", c.title, h.cell(k, "single/msgs", 0), h.cell(k, "single/p50", 2), h.cell(k, "single/p99", 2), h.ratio(k, floor, "single/p50"))
		}
		w("\nCPU µs per delivered message by process (the CloudEvents run; total first; the publishers and the subscriber app are the harness process, in a column of their own), mqbroker's store commits (its sessions and messages: fsyncs with a data directory) per delivered message, and memory, MiB idle→load.\n\n")
		w("| contender | CPU µs per message | harness µs | mqbroker store commits per message | memory MiB |\n|---|---|---|---|---|\n")
		for _, c := range h.pubsubContenders() {
			k := h.key(c.id, d)
			if len(h.res.get(k, "msgs/ce")) == 0 {
				continue
			}
			w("| %s | %s | %s | %s | %s |\n", c.title, h.perProcess(k, "cpu", 0, true), h.cell(k, "cpu-harness", 0), h.cell(k, "commits", 3), h.memory(k))
		}
		w("\n")
	}
}

func (h *harness) stateReport(b *strings.Builder) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	w("## State through daprd %s\n\n", h.daprd.version)
	w("Operations per second, %d go-sdk gRPC clients; each cell: median (min–max), × peer, × floor. The peer of state.mqttkv in memory is redis without persistence, with a data directory redis with `appendfsync always`. state.mqttkv runs with `persistent: true` (as `make run`).\n\n", publishers)
	w("| contender |")
	for _, op := range stateOps {
		w(" %s |", stateOpTitles[op])
	}
	w("\n|---|---|---|---|---|\n")
	for _, c := range stateContenders {
		if len(h.res.get(c.id, "ops/get")) == 0 && len(h.res.get(c.id, "ops/set")) == 0 {
			continue
		}
		w("| %s |", c.title)
		for _, op := range stateOps {
			m := "ops/" + op
			cell := h.cell(c.id, m, 0)
			if c.peer != "" {
				cell += " · " + h.ratio(c.id, c.peer, m) + " peer"
			}
			if !c.floor {
				cell += " · " + h.ratio(c.id, "noop", m) + " floor"
			}
			w(" %s |", cell)
		}
		w("\n")
	}
	w("\nCPU µs per operation by process (total first), and memory, MiB idle→load.\n\n")
	w("| contender | Set | Get | ETag cycle | BulkGet(100) | memory MiB |\n|---|---|---|---|---|---|\n")
	for _, c := range stateContenders {
		if len(h.res.get(c.id, "ops/get")) == 0 {
			continue
		}
		w("| %s |", c.title)
		for _, op := range stateOps {
			w(" %s |", h.perProcess(c.id, "cpu-"+op, 0, true))
		}
		w(" %s |\n", h.memory(c.id))
	}
	w("\n")
}

func (h *harness) connectorReport(b *strings.Builder) {
	w := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	w("## The sample connector (app/)\n\n")
	w("As `make run` runs it (`-telemetry-partitions` K: K partitioned subscriptions; 1 is one plain subscription): mqbroker with a data directory, pubsub.mqttv5 and state.mqttkv, daprd and the app; devicesim publishes %d readings from %d devices, all devices at once, each device's readings in order, as fast as the broker acknowledges them (published/s: the readings over devicesim's run); rows/s is from the start of devicesim to the last row written to the lake (durable, exactly once: the lake is checked for a row per reading and no duplicate after each round; a failure is listed below). CPU µs per row by process (total first), memory MiB idle→load.\n\n", h.cfg.connectorReadings(), publishers)
	w("| daprd, partitions, app | rows/s | × pub/sub floor (CE) | published/s | exactly once | CPU µs per row | mqbroker store commits per row | memory MiB |\n|---|---|---|---|---|---|---|---|\n")
	apps := []string{""} // this checkout's app, then the -connector-apps builds
	for label := range h.cfg.ConnectorApps {
		apps = append(apps, label)
	}
	sort.Strings(apps[1:])
	for _, d := range h.daprds() {
		for _, part := range h.cfg.connectorPartitions() {
			for _, label := range apps {
				id := connectorID(part)
				app := "this checkout"
				if label != "" {
					id, app = id+"@"+label, label
				}
				k := h.key(id, d)
				if len(h.res.get(k, "rows/s")) == 0 {
					continue
				}
				checked := h.res.get(k, "exactly-once")
				ok := 0
				for _, v := range checked {
					ok += int(v)
				}
				w("| %s, %d, %s | %s | %s | %s | %d of %d rounds | %s | %s | %s |\n", d.version, part, app, h.cell(k, "rows/s", 0), h.ratioTo(k, "rows/s", h.key("noop", d), "msgs/ce"),
					h.cell(k, "published/s", 0), ok, len(checked), h.perProcess(k, "cpu", 0, true), h.cell(k, "commits", 2), h.memory(k))
			}
		}
	}
	w("\n")
}

// ratioTo is median(key, metric)/median(ref, refMetric).
func (h *harness) ratioTo(key, metric, ref, refMetric string) string {
	a, b := h.res.get(key, metric), h.res.get(ref, refMetric)
	if len(a) == 0 || len(b) == 0 {
		return "—"
	}
	ma, _, _ := median(a)
	mb, _, _ := median(b)
	if mb == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f×", ma/mb)
}

// num formats v with thousands separators and digits decimals.
func num(v float64, digits int) string {
	s := fmt.Sprintf("%.*f", digits, v)
	intPart, frac, _ := strings.Cut(s, ".")
	neg := strings.HasPrefix(intPart, "-")
	intPart = strings.TrimPrefix(intPart, "-")
	var out []byte
	for i, c := range []byte(intPart) {
		if i > 0 && (len(intPart)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, c)
	}
	s = string(out)
	if neg {
		s = "-" + s
	}
	if frac != "" {
		s += "." + frac
	}
	return s
}

// firstLine is the first line a tool prints for args (stdout and stderr), "" when it is missing.
func firstLine(tool string, args ...string) string {
	if tool == "" {
		return ""
	}
	out, _ := exec.Command(tool, args...).CombinedOutput() // mosquitto -h exits non-zero
	return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
}

// gitDescribe names the commit of the repository, with -dirty when it has changes.
func gitDescribe(root string) string {
	cmd := exec.Command("git", "describe", "--always", "--dirty")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return "unknown commit"
	}
	return strings.TrimSpace(string(out))
}

// goal is one target of issue 13: a measured ratio or figure against its bound.
type goal struct {
	what   string
	value  float64 // the measured ratio or figure
	ok     bool    // whether it was measured in this run
	bound  float64
	atMost bool // the value must be ≤ bound (else ≥)
	unit   string
}

// goalsReport checks the figures of this run against the goals of issue 13 (on daprd 1.16.0).
func (h *harness) goalsReport(b *strings.Builder) {
	med := func(key, metric string) (float64, bool) {
		xs := h.res.get(key, metric)
		if len(xs) == 0 {
			return 0, false
		}
		m, _, _ := median(xs)
		return m, true
	}
	ratio := func(key, metric, ref, refMetric string) (float64, bool) {
		a, ok1 := med(key, metric)
		r, ok2 := med(ref, refMetric)
		if !ok1 || !ok2 || r == 0 {
			return 0, false
		}
		return a / r, true
	}
	var gs []goal
	add := func(what string, v float64, ok bool, bound float64, atMost bool, unit string) {
		gs = append(gs, goal{what: what, value: v, ok: ok, bound: bound, atMost: atMost, unit: unit})
	}
	for _, id := range []string{"mqttv5-mosquitto", "mqttv5-mqbroker", "mqttv5-mqbroker-disk", "mqttv5-mqbroker-part4", "mqttv5-mqbroker-disk-part4"} {
		v, ok := ratio(id, "msgs/ce", "noop", "msgs/ce")
		add("pub/sub delivered msg/s, "+id+" / floor", v, ok, 0.9, false, "×")
	}
	v, ok := ratio("mqttv5-mqbroker-disk", "msgs/ce", "mqttv5-mqbroker", "msgs/ce")
	add("pub/sub durable mqbroker / in memory", v, ok, 0.8, false, "×")
	v, ok = ratio("mqttv5-mqbroker-disk-part4", "msgs/ce", "mqttv5-mqbroker-part4", "msgs/ce")
	add("pub/sub durable mqbroker / in memory, 4 partitions", v, ok, 0.8, false, "×")
	v, ok = med("mqttv5-mqbroker", "cpu/pubsub-mqtt5")
	add("pub/sub component CPU per delivered message (mqbroker in memory)", v, ok, 150, true, " µs")
	v, ok = ratio("mqttv5-mosquitto", "single/p50", "noop", "single/p50")
	add("one publisher's publish p50, Mosquitto / floor", v, ok, 1.2, true, "×")
	for _, op := range []struct {
		op    string
		bound float64
	}{{"set", 0.8}, {"get", 0.8}, {"etag", 0.4}, {"bulkget", 0.8}} {
		v, ok := ratio("mqttkv", "ops/"+op.op, "noop", "ops/"+op.op)
		add("state "+stateOpTitles[op.op]+", mqttkv in memory / floor", v, ok, op.bound, false, "×")
	}
	v, ok = med("mqttkv", "cpu-get/state-kv")
	add("state component CPU per Get", v, ok, 60, true, " µs")
	v, ok = ratio("mqttkv-disk", "ops/get", "mqttkv", "ops/get")
	add("state Get, data directory / in memory", v, ok, 0.9, false, "×")
	v, ok = ratio("mqttkv-disk", "ops/set", "mqttkv", "ops/set")
	add("state Set, data directory / in memory", v, ok, 0.5, false, "×")
	for _, k := range h.cfg.connectorPartitions() {
		v, ok = ratio(connectorID(k), "rows/s", "noop", "msgs/ce")
		title := "connector rows/s / pub/sub floor"
		if k > 1 {
			title = fmt.Sprintf("connector rows/s, %d partitions / pub/sub floor", k)
		}
		add(title, v, ok, 0.5, false, "×")
	}

	fmt.Fprintf(b, "## Goals of issue 13 in this run (daprd %s)\n\n| goal | measured | target | met |\n|---|---|---|---|\n", h.daprd.version)
	for _, g := range gs {
		if !g.ok {
			continue
		}
		cmp, met := "≥", g.value >= g.bound
		if g.atMost {
			cmp, met = "≤", g.value <= g.bound
		}
		digits := 2
		if g.unit != "×" {
			digits = 0
		}
		yes := "no"
		if met {
			yes = "yes"
		}
		fmt.Fprintf(b, "| %s | %s%s | %s %s%s | %s |\n", g.what, num(g.value, digits), g.unit, cmp, num(g.bound, digits), g.unit, yes)
	}
	b.WriteString("\n")
}
