package containers

import (
	"archive/tar"
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
)

// composeTool is one way to run Docker Compose: the CLI plugin (`docker compose`) or the
// standalone program (`docker-compose`).
type composeTool struct {
	name string   // for the subtest
	argv []string // the command before the Compose arguments
}

// composeTools are the Compose tools installed here, each checked with `version`.
func composeTools() []composeTool {
	var found []composeTool
	for _, c := range []composeTool{{"plugin", []string{"docker", "compose"}}, {"standalone", []string{"docker-compose"}}} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err := exec.CommandContext(ctx, c.argv[0], append(c.argv[1:], "version")...).Run()
		cancel()
		if err == nil {
			found = append(found, c)
		}
	}
	return found
}

// composeProject is the repository's docker-compose.yaml run as one project with a unique name.
type composeProject struct {
	t    *testing.T
	tool composeTool
	name string
	env  []string
	cli  *testcontainers.DockerClient
}

// newComposeProject names a project mqdapr-test-<suffix> and registers `down -v` for the end of
// the test, also on failure, then checks that nothing of the project is left.
func newComposeProject(t *testing.T, tool composeTool, env ...string) *composeProject {
	t.Helper()
	p := &composeProject{t: t, tool: tool, name: "mqdapr-test-" + suffix(), env: env, cli: dockerClient(t)}
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := p.run(2*time.Minute, "ps", "-a")
			t.Logf("compose ps at the failure:\n%s", out)
			out, _ = p.run(2*time.Minute, "logs", "--no-color", "--tail", "40")
			t.Logf("compose logs at the failure:\n%s", out)
		}
		if out, err := p.run(3*time.Minute, "down", "-v", "--remove-orphans", "-t", "10"); err != nil {
			t.Errorf("compose down: %v\n%s", err, out)
		}
		if left := p.leftovers(); left != "" {
			t.Errorf("left by compose down -v:%s", left)
		}
	})
	return p
}

// run runs the Compose tool on the repository's docker-compose.yaml within timeout.
func (p *composeProject) run(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	root := repoRoot(p.t)
	argv := append(append(append([]string{}, p.tool.argv[1:]...),
		"-f", filepath.Join(root, "docker-compose.yaml"), "-p", p.name), args...)
	cmd := exec.CommandContext(ctx, p.tool.argv[0], argv...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), p.env...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("%w after %s", ctx.Err(), timeout)
	}
	return string(out), err
}

// filter selects the project's objects by the label every Compose version puts on them.
func (p *composeProject) filter() client.Filters {
	return client.Filters{}.Add("label", "com.docker.compose.project="+p.name)
}

// container is the id of the service's container (one per service here).
func (p *composeProject) container(service string) string {
	p.t.Helper()
	cs, err := p.cli.ContainerList(context.Background(), client.ContainerListOptions{All: true,
		Filters: p.filter().Add("label", "com.docker.compose.service="+service)})
	if err != nil {
		p.t.Fatal(err)
	}
	if len(cs.Items) != 1 {
		p.t.Fatalf("service %s: %d containers, want 1", service, len(cs.Items))
	}
	return cs.Items[0].ID
}

// logs is everything the service's container wrote (every run of it, restarts included).
func (p *composeProject) logs(service string) string {
	p.t.Helper()
	r, err := p.cli.ContainerLogs(context.Background(), p.container(service), client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		p.t.Fatal(err)
	}
	defer r.Close()
	b, _ := io.ReadAll(r) // multiplexed frames: whole lines stay whole, which is all we search for
	return string(b)
}

// leftovers lists the project's containers, networks and volumes that still exist.
func (p *composeProject) leftovers() string {
	ctx := context.Background()
	var left string
	if cs, err := p.cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: p.filter()}); err != nil {
		left += " (cannot list containers: " + err.Error() + ")"
	} else {
		for _, c := range cs.Items {
			left += fmt.Sprintf(" container %v", c.Names)
		}
	}
	if ns, err := p.cli.NetworkList(ctx, client.NetworkListOptions{Filters: p.filter()}); err != nil {
		left += " (cannot list networks: " + err.Error() + ")"
	} else {
		for _, n := range ns.Items {
			left += " network " + n.Name
		}
	}
	if vs, err := p.cli.VolumeList(ctx, client.VolumeListOptions{Filters: p.filter()}); err != nil {
		left += " (cannot list volumes: " + err.Error() + ")"
	} else {
		for _, v := range vs.Items {
			left += " volume " + v.Name
		}
	}
	return left
}

// lakeRows reads the data lake out of the service's container (a tar of the lake folder through
// the Docker API: the image has no shell) and counts its rows by reading id and by replica. A
// line still being written (no newline yet, or not JSON yet) is not counted.
func (p *composeProject) lakeRows(service, dir string) (byID, byReplica map[string]int) {
	p.t.Helper()
	res, err := p.cli.CopyFromContainer(context.Background(), p.container(service), client.CopyFromContainerOptions{SourcePath: dir})
	if err != nil {
		p.t.Fatal(err)
	}
	defer res.Content.Close()
	byID, byReplica = map[string]int{}, map[string]int{}
	tr := tar.NewReader(res.Content)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return byID, byReplica
		}
		if err != nil {
			p.t.Fatal(err)
		}
		if h.Typeflag != tar.TypeReg || !strings.HasSuffix(h.Name, ".jsonl") {
			continue
		}
		r := bufio.NewReader(tr)
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				break // EOF: a last line without its newline is not complete
			}
			var row struct {
				ID      string `json:"id"`
				Replica string `json:"replica"`
			}
			if json.Unmarshal(line, &row) == nil && row.ID != "" {
				byID[row.ID]++
				byReplica[row.Replica]++
			}
		}
	}
}

// composeImages builds every image docker-compose.yaml uses and tags them
// <prefix>/<program>:test, the daprd one <prefix>/daprd:<daprd version> (scripts/images.sh daprd,
// from the static daprd of scripts/daprd.sh); all removed at the end of the test. It returns the
// Compose variables that point docker-compose.yaml at them.
func composeImages(t *testing.T) []string {
	t.Helper()
	prefix := "mqdapr-test-" + suffix()
	cli := dockerClient(t)
	ctx := context.Background()
	for program, tag := range buildImages(t, "mqbroker", "pubsub-mqtt5", "state-kv", "app", "devicesim", "daprd-watch") {
		target := prefix + "/" + program + ":test"
		if _, err := cli.ImageTag(ctx, client.ImageTagOptions{Source: tag, Target: target}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { removeImage(t, cli, target) })
	}
	bctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(bctx, filepath.Join(repoRoot(t), "scripts", "images.sh"), "daprd")
	cmd.Env = append(os.Environ(), "IMAGE_PREFIX="+prefix, "IMAGE_ARCHES="+runtime.GOARCH, "IMAGES_OUT="+t.TempDir())
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("scripts/images.sh daprd: %v\n%s", err, out)
	}
	daprd := strings.TrimSpace(string(out))
	t.Cleanup(func() { removeImage(t, cli, daprd) })
	return []string{"MQDAPR_IMAGE_PREFIX=" + prefix, "MQDAPR_VERSION=test", "DAPRD_IMAGE=" + daprd}
}

func removeImage(t *testing.T, cli *testcontainers.DockerClient, ref string) {
	if _, err := cli.ImageRemove(context.Background(), ref, client.ImageRemoveOptions{Force: true, PruneChildren: true}); err != nil {
		t.Errorf("removing image %s: %v", ref, err)
	}
}
