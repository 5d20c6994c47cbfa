// Command kvdrive measures state.mqttkv component processes by themselves, without daprd: it
// starts each given binary in turn (alternating their order round by round), speaks daprd's
// pluggable state protocol to it over its unix socket from several goroutines, and reports, per
// operation, the medians over the rounds of ops/s and of the component process's CPU (user +
// system, from /proc/<pid>/stat) per operation, with the ratio of each binary to the first. The
// broker (mqbroker's, in memory) runs in this process unless -broker names one, so the CPU
// measured is the component's own, gRPC server included.
//
//	go build -o /tmp/a ./cmd/state-kv   # one build per version to compare
//	go run ./bench/cmd/kvdrive -rounds 5 -bin main=/tmp/a -bin new=/tmp/b
//
// Operations (one Set of each key before): set and get of 100 keys, etag (Get, then Set with its
// ETag, each goroutine its own key), firstwrite (a new key each time, first-write concurrency),
// delete (without ETag) and bulkget (BulkGet of the 100 keys; one operation).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	proto "github.com/dapr/dapr/pkg/proto/components/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/mqdapr/mqdapr/broker"
	"github.com/mqdapr/mqdapr/broker/kvservice"
	"github.com/mqdapr/mqdapr/broker/statestore"
)

type bins []string

func (b *bins) String() string     { return strings.Join(*b, ",") }
func (b *bins) Set(v string) error { *b = append(*b, v); return nil }

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "kvdrive:", err)
		os.Exit(1)
	}
}

func run() error {
	var binaries bins
	flag.Var(&binaries, "bin", "name=path of a state-kv binary (repeat; the first is the base of the ratios)")
	brokerURL := flag.String("broker", "", "broker URL (empty: an in-memory mqbroker in this process)")
	opsFlag := flag.String("ops", "set,get,etag,firstwrite,delete,bulkget", "operations, comma-separated")
	n := flag.Int("n", 4000, "set/get/firstwrite operations per round; etag and delete n/4, bulkget n/40")
	clients := flag.Int("clients", 8, "concurrent callers")
	rounds := flag.Int("rounds", 3, "rounds")
	flag.Parse()
	if len(binaries) == 0 {
		return fmt.Errorf("give at least one -bin name=path")
	}
	type bin struct{ name, path string }
	var bs []bin
	for _, b := range binaries {
		name, path, ok := strings.Cut(b, "=")
		if !ok || name == "" || path == "" {
			return fmt.Errorf("-bin %q: want name=path", b)
		}
		bs = append(bs, bin{name, path})
	}
	ops := strings.Split(*opsFlag, ",")
	for _, op := range ops {
		if _, ok := opCount[op]; !ok {
			return fmt.Errorf("unknown operation %q; want some of set, get, etag, firstwrite, delete, bulkget", op)
		}
	}
	url := *brokerURL
	if url == "" {
		u, stop, err := startBroker()
		if err != nil {
			return err
		}
		defer stop()
		url = u
	}
	type key struct{ bin, op string }
	opsPerSec, cpuPerOp := map[key][]float64{}, map[key][]float64{}
	rss := map[string][]float64{}
	for r := range *rounds {
		order := slices.Clone(bs)
		if r%2 == 1 {
			slices.Reverse(order)
		}
		for _, b := range order {
			res, hwm, err := drive(b.path, url, fmt.Sprintf("%s-%d-%d", b.name, r, os.Getpid()), ops, *n, *clients)
			if errors.Is(err, errNotServing) { // seen once on a loaded machine: the process stopped at once; start it again
				fmt.Fprintf(os.Stderr, "%s round %d: %v; starting it again\n", b.name, r+1, err)
				res, hwm, err = drive(b.path, url, fmt.Sprintf("%s-%d-%d-again", b.name, r, os.Getpid()), ops, *n, *clients)
			}
			if err != nil {
				return fmt.Errorf("%s round %d: %w", b.name, r+1, err)
			}
			for op, m := range res {
				opsPerSec[key{b.name, op}] = append(opsPerSec[key{b.name, op}], m[0])
				cpuPerOp[key{b.name, op}] = append(cpuPerOp[key{b.name, op}], m[1])
				fmt.Fprintf(os.Stderr, "round %d %-6s %-10s %8.0f ops/s %9.1f µs CPU/op\n", r+1, b.name, op, m[0], m[1])
			}
			rss[b.name] = append(rss[b.name], hwm)
		}
	}
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Printf("medians of %d rounds, %d callers, load average %s\n", *rounds, *clients, strings.Join(strings.Fields(string(load))[:3], " "))
	fmt.Printf("%-10s", "op")
	for _, b := range bs {
		fmt.Printf(" | %-6s ops/s  CPU µs/op", b.name)
	}
	fmt.Println()
	for _, op := range ops {
		fmt.Printf("%-10s", op)
		base := key{bs[0].name, op}
		for _, b := range bs {
			k := key{b.name, op}
			fmt.Printf(" | %8.0f %9.1f", median(opsPerSec[k]), median(cpuPerOp[k]))
			if b != bs[0] {
				fmt.Printf(" (%.2f× ops/s, %.2f× CPU)", median(opsPerSec[k])/median(opsPerSec[base]), median(cpuPerOp[k])/median(cpuPerOp[base]))
			}
		}
		fmt.Println()
	}
	for _, b := range bs {
		fmt.Printf("%s: peak RSS (VmHWM) median %.1f MB\n", b.name, median(rss[b.name])/1024)
	}
	return nil
}

func median(v []float64) float64 {
	v = slices.Clone(v)
	slices.Sort(v)
	if len(v) == 0 {
		return 0
	}
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// errNotServing is a component process that did not answer Init.
var errNotServing = errors.New("the component process does not serve")

// opCount is the number of operations of a round, for n.
var opCount = map[string]func(n int) int{
	"set": func(n int) int { return n }, "get": func(n int) int { return n }, "firstwrite": func(n int) int { return n },
	"etag": func(n int) int { return n / 4 }, "delete": func(n int) int { return n / 4 }, "bulkget": func(n int) int { return max(1, n/40) },
}

// drive runs one round on a new process of bin: each operation's ops/s and CPU µs per operation,
// and the process's peak RSS in kB.
func drive(bin, url, id string, ops []string, n, clients int) (map[string][2]float64, float64, error) {
	dir, err := os.MkdirTemp("", "kvdrive-")
	if err != nil {
		return nil, 0, err
	}
	defer os.RemoveAll(dir)
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "DAPR_COMPONENT_SOCKETS_FOLDER="+dir, "MQDAPR_LOG_LEVEL=error")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, 0, err
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	pid := cmd.Process.Pid
	sock := filepath.Join(dir, "mqttkv.sock")
	for deadline := time.Now().Add(30 * time.Second); ; {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return nil, 0, fmt.Errorf("no socket %s after 30 s", sock)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cc, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, 0, err
	}
	defer cc.Close()
	c := proto.NewStateStoreClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if _, err := c.Init(ctx, &proto.InitRequest{Metadata: &proto.MetadataRequest{Properties: map[string]string{
		"url": url, "consumerID": "kvdrive", "clientID": id, "connectTimeout": "10s", "persistent": "true"}}}); err != nil {
		return nil, 0, fmt.Errorf("%w: Init: %w", errNotServing, err)
	}
	value := make([]byte, 64)
	keys := make([]string, 100)
	bulk := &proto.BulkGetRequest{}
	for i := range keys {
		keys[i] = id + "||k" + strconv.Itoa(i)
		if _, err := c.Set(ctx, &proto.SetRequest{Key: keys[i], Value: value}); err != nil {
			return nil, 0, fmt.Errorf("first Set: %w", err)
		}
		bulk.Items = append(bulk.Items, &proto.GetRequest{Key: keys[i]})
	}
	fns := map[string]func(cl, i int) error{
		"set": func(_, i int) error {
			_, err := c.Set(ctx, &proto.SetRequest{Key: keys[i%100], Value: value})
			return err
		},
		"get": func(_, i int) error {
			g, err := c.Get(ctx, &proto.GetRequest{Key: keys[i%100]})
			if err == nil && len(g.Data) != len(value) {
				err = fmt.Errorf("Get %s: %d bytes, want %d", keys[i%100], len(g.Data), len(value))
			}
			return err
		},
		"etag": func(cl, _ int) error {
			k := id + "||e" + strconv.Itoa(cl)
			g, err := c.Get(ctx, &proto.GetRequest{Key: k})
			if err != nil {
				return err
			}
			_, err = c.Set(ctx, &proto.SetRequest{Key: k, Value: value, Etag: g.Etag})
			return err
		},
		"firstwrite": func(_, i int) error {
			_, err := c.Set(ctx, &proto.SetRequest{Key: id + "||fw" + strconv.Itoa(i), Value: value,
				Options: &proto.StateOptions{Concurrency: proto.StateOptions_CONCURRENCY_FIRST_WRITE}})
			return err
		},
		"delete": func(_, i int) error {
			_, err := c.Delete(ctx, &proto.DeleteRequest{Key: id + "||gone" + strconv.Itoa(i%100)})
			return err
		},
		"bulkget": func(_, _ int) error {
			r, err := c.BulkGet(ctx, bulk)
			if err == nil {
				for _, it := range r.Items {
					if it.Error != "" || len(it.Data) != len(value) {
						return fmt.Errorf("BulkGet %s: %d bytes, error %q", it.Key, len(it.Data), it.Error)
					}
				}
				if len(r.Items) != len(keys) {
					err = fmt.Errorf("BulkGet: %d items, want %d", len(r.Items), len(keys))
				}
			}
			return err
		},
	}
	out := map[string][2]float64{}
	for _, op := range ops {
		fn, total := fns[op], opCount[op](n)
		var next atomic.Int64
		var failed atomic.Value
		var wg sync.WaitGroup
		cpu0, err := procCPU(pid)
		if err != nil {
			return nil, 0, err
		}
		start := time.Now()
		for cl := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := int(next.Add(1)); i <= total; i = int(next.Add(1)) {
					if err := fn(cl, i); err != nil {
						failed.CompareAndSwap(nil, fmt.Errorf("%s: %w", op, err))
						return
					}
				}
			}()
		}
		wg.Wait()
		wall := time.Since(start)
		cpu1, err := procCPU(pid)
		if err != nil {
			return nil, 0, err
		}
		if err, _ := failed.Load().(error); err != nil {
			return nil, 0, err
		}
		out[op] = [2]float64{float64(total) / wall.Seconds(), float64((cpu1 - cpu0).Microseconds()) / float64(total)}
	}
	return out, peakRSS(pid), nil
}

// procCPU is the process's user + system time so far (clock ticks of 10 ms).
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:]) // fields from the 3rd (state)
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, s)
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

// peakRSS is VmHWM in kB (0 if unknown).
func peakRSS(pid int) float64 {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb
		}
	}
	return 0
}

// startBroker starts mqbroker's broker with its key-value service in memory on 127.0.0.1:0.
func startBroker() (string, func(), error) {
	engine, err := statestore.NewEngine(statestore.NewDefaultOptions())
	if err != nil {
		return "", nil, err
	}
	svc, err := kvservice.New(kvservice.Options{Engine: engine})
	if err != nil {
		return "", nil, err
	}
	o := broker.NewDefaultOptions()
	o.Addr = "127.0.0.1:0"
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	o.Services = []broker.Service{svc}
	b, err := broker.New(o)
	if err != nil {
		return "", nil, err
	}
	if err := b.Start(); err != nil {
		return "", nil, err
	}
	if err := svc.Start(b); err != nil {
		return "", nil, err
	}
	return "mqtt://" + b.Addrs()[0], func() { _ = svc.Close(); _ = b.Close(); _ = engine.Close() }, nil
}
