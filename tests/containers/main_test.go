// Package containers runs mqdapr's images as containers with testcontainers-go: each image is
// built from its Dockerfile in the repository (the build context that scripts/images.sh
// prepares), with nothing pulled, so it runs on a machine with a Docker Engine and no registry.
// A module of its own (testcontainers-go and the Docker client stay out of the main module), run
// by `make test` without -race.
//
// Without a Docker Engine the tests skip, unless MQDAPR_TEST_DOCKER=required (make test sets it),
// when they fail. Every container, volume and image a test creates is removed in t.Cleanup, also
// on failure; after the run TestMain lists what carries this session's label and fails if
// anything is left.
package containers

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
)

func TestMain(m *testing.M) {
	// The reaper (Ryuk) is an image to pull, which this machine cannot: the tests remove what they
	// create themselves.
	os.Setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
	// On a machine that is itself a container (/.dockerenv) running its own Docker Engine (its
	// docker0 bridge is here), testcontainers-go would take the default gateway for the host of
	// published ports; they are on this machine's loopback.
	if _, err := net.InterfaceByName("docker0"); err == nil && os.Getenv("TESTCONTAINERS_HOST_OVERRIDE") == "" {
		os.Setenv("TESTCONTAINERS_HOST_OVERRIDE", "127.0.0.1")
	}
	code := m.Run()
	if dockerErr == nil {
		if left := leftovers(); left != "" {
			fmt.Fprintln(os.Stderr, "containers: left behind after the tests:", left)
			code = 1
		}
	}
	os.Exit(code)
}

// dockerErr is why Docker cannot be used (nil when it can), checked once.
var dockerErr = func() error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "docker", "version", "--format", "{{.Server.Version}}").CombinedOutput(); err != nil {
		return fmt.Errorf("docker version: %v: %s", err, out)
	}
	return nil
}()

// requireDocker skips t when no Docker Engine answers, or fails it when MQDAPR_TEST_DOCKER=required.
func requireDocker(t *testing.T) {
	t.Helper()
	if dockerErr == nil {
		return
	}
	if os.Getenv("MQDAPR_TEST_DOCKER") == "required" {
		t.Fatalf("no Docker Engine: %v", dockerErr)
	}
	t.Skipf("no Docker Engine (%v): start one to run the container tests (make test requires it)", dockerErr)
}

// leftovers lists the containers, volumes and networks carrying this test session's label.
func leftovers() string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		return "cannot list: " + err.Error()
	}
	defer cli.Close()
	f := client.Filters{}.Add("label", "org.testcontainers.sessionId="+testcontainers.SessionID())
	var left string
	cs, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		return "cannot list containers: " + err.Error()
	}
	for _, c := range cs.Items {
		left += fmt.Sprintf(" container %s %v", c.ID[:12], c.Names)
	}
	vs, err := cli.VolumeList(ctx, client.VolumeListOptions{Filters: f})
	if err != nil {
		return "cannot list volumes: " + err.Error()
	}
	for _, v := range vs.Items {
		left += " volume " + v.Name
	}
	ns, err := cli.NetworkList(ctx, client.NetworkListOptions{Filters: f})
	if err != nil {
		return "cannot list networks: " + err.Error()
	}
	for _, n := range ns.Items {
		left += " network " + n.Name
	}
	return left
}
