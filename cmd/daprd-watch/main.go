// Command daprd-watch runs daprd and ends when one of daprd's pluggable components restarts, so
// that the container runtime starts daprd again and it initialises the component afresh (see
// internal/daprdwatch). docker-compose.yaml uses it as the entrypoint of each daprd container;
// being static, it needs nothing from the image, so the official daprd image (no shell) works.
//
//	daprd-watch -component pubsub:/tmp/dapr-components-sockets/mqttv5.sock \
//	            -component state:/tmp/dapr-components-sockets/mqttkv.sock -- /daprd --app-id ...
//	daprd-watch install DIR       copy this binary to DIR/daprd-watch (an init container fills a
//	                              volume that the daprd container mounts)
//	daprd-watch healthcheck       GET daprd's /v1.0/healthz (-url): the daprd container's health
//	                              check, since the daprd image has no shell and no probe
//	daprd-watch pause             sleep until SIGTERM/SIGINT: the holder of a pod-like group's
//	                              network namespace, as Kubernetes' pause container
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/mqdapr/mqdapr/internal/daprdwatch"
	"github.com/mqdapr/mqdapr/internal/healthcheck"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "install":
			if err := install(os.Args[2:]); err != nil {
				fmt.Fprintln(os.Stderr, "daprd-watch install:", err)
				os.Exit(1)
			}
			return
		case "healthcheck":
			os.Exit(healthcheckMain(os.Args[2:], os.Stdout))
		case "pause":
			sigs := make(chan os.Signal, 1)
			signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
			<-sigs
			return
		}
	}
	os.Exit(run(os.Args[1:]))
}

// componentsFlag collects repeated -component values.
type componentsFlag []daprdwatch.Component

func (c *componentsFlag) String() string { return fmt.Sprint(len(*c), " components") }

func (c *componentsFlag) Set(s string) error {
	comp, err := daprdwatch.ParseComponent(s)
	if err != nil {
		return err
	}
	*c = append(*c, comp)
	return nil
}

func run(args []string) int {
	o := daprdwatch.NewDefaultOptions()
	fs := flag.NewFlagSet("daprd-watch", flag.ContinueOnError)
	var comps componentsFlag
	fs.Var(&comps, "component", "a component daprd uses, kind:socket with kind pubsub or state (repeat for each)")
	fs.DurationVar(&o.Interval, "interval", o.Interval, "time between two checks of the sockets")
	fs.IntVar(&o.Failures, "failures", o.Failures, "consecutive failed Pings that count as a component gone")
	fs.DurationVar(&o.StopTimeout, "stop-timeout", o.StopTimeout, "how long daprd has to stop after SIGTERM")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	argv := fs.Args()
	if len(comps) == 0 || len(argv) == 0 {
		fmt.Fprintln(os.Stderr, "daprd-watch: want at least one -component kind:socket and the daprd command after --, e.g. daprd-watch -component pubsub:/tmp/dapr-components-sockets/mqttv5.sock -- /daprd --app-id app")
		return 2
	}
	if o.Interval <= 0 || o.Failures < 1 || o.StopTimeout <= 0 {
		fmt.Fprintln(os.Stderr, "daprd-watch: -interval and -stop-timeout must be > 0, -failures ≥ 1")
		return 2
	}
	o.Components = comps
	o.Log = slog.New(slog.NewTextHandler(os.Stderr, nil)).With("program", "daprd-watch")
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	return daprdwatch.Run(o, argv, sigs)
}

// install copies this program's binary to DIR/daprd-watch through a temporary file and a rename,
// so that a daprd container starting at the same time never runs half a file.
func install(args []string) error {
	if len(args) != 1 {
		return errors.New("want one argument, the folder to copy the binary into")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	src, err := os.Open(self)
	if err != nil {
		return err
	}
	defer src.Close()
	tmp, err := os.CreateTemp(args[0], ".daprd-watch-*")
	if err != nil {
		return fmt.Errorf("folder %s: %w", args[0], err)
	}
	defer os.Remove(tmp.Name()) // after the rename: nothing left to remove
	if _, err := io.Copy(tmp, src); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	dst := filepath.Join(args[0], "daprd-watch")
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return err
	}
	fmt.Println("installed", dst)
	return nil
}

// healthcheckMain is `daprd-watch healthcheck`: one GET of daprd's health endpoint, one line on
// stdout, exit 0 on 2xx, 1 otherwise, 2 for bad arguments.
func healthcheckMain(args []string, stdout io.Writer) int {
	fs := flag.NewFlagSet("daprd-watch healthcheck", flag.ContinueOnError)
	url := fs.String("url", "http://127.0.0.1:3500/v1.0/healthz", "daprd's health URL (--dapr-http-port)")
	return healthcheck.Main(fs, args, stdout, func() healthcheck.Probe {
		return func(ctx context.Context) (string, error) { return healthcheck.HTTP(ctx, *url) }
	})
}
