package containers

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
)

// repoRoot is the repository root (this package is tests/containers).
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// suffix is a random name part, so that parallel runs on one engine do not collide.
func suffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// dockerClient is a Docker API client closed at the end of the test.
func dockerClient(t *testing.T) *testcontainers.DockerClient {
	t.Helper()
	cli, err := testcontainers.NewDockerClientWithOpts(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// buildImages builds the programs' images for the host's architecture from their Dockerfiles: the
// static binaries and the build contexts come from scripts/images.sh (IMAGES_NO_DOCKER=1, into a
// temporary folder), the builds from testcontainers-go. It returns the tags by program; the
// images are removed at the end of the test.
func buildImages(t *testing.T, programs ...string) map[string]string {
	t.Helper()
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(repoRoot(t), "scripts", "images.sh"), programs...)
	cmd.Env = append(os.Environ(), "IMAGES_NO_DOCKER=1", "IMAGE_ARCHES="+runtime.GOARCH, "IMAGES_OUT="+out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/images.sh %v: %v\n%s", programs, err, b)
	}
	provider, err := testcontainers.NewDockerProvider()
	if err != nil {
		t.Fatal(err)
	}
	defer provider.Close()
	cli := dockerClient(t)
	version := "test"
	tags := make(map[string]string, len(programs))
	for _, program := range programs {
		req := testcontainers.ContainerRequest{FromDockerfile: testcontainers.FromDockerfile{
			Context:   filepath.Join(out, "images", "linux_"+runtime.GOARCH, program),
			Repo:      "mqdapr-test/" + program,
			Tag:       suffix(),
			BuildArgs: map[string]*string{"VERSION": &version},
			KeepImage: true,
		}}
		tag, err := provider.BuildImage(ctx, &req)
		if err != nil {
			t.Fatalf("building %s: %v", program, err)
		}
		t.Cleanup(func() {
			if _, err := cli.ImageRemove(context.Background(), tag, client.ImageRemoveOptions{Force: true, PruneChildren: true}); err != nil {
				t.Errorf("removing image %s: %v", tag, err)
			}
		})
		tags[program] = tag
	}
	return tags
}

// volume creates a named volume, labelled as this test session's, removed at the end of the test
// (after the containers using it, which are cleaned up later-registered, hence first).
func volume(t *testing.T) string {
	t.Helper()
	cli := dockerClient(t)
	name := "mqdapr-test-" + suffix()
	if _, err := cli.VolumeCreate(context.Background(), client.VolumeCreateOptions{Name: name, Labels: testcontainers.GenericLabels()}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := cli.VolumeRemove(context.Background(), name, client.VolumeRemoveOptions{Force: true}); err != nil {
			t.Errorf("removing volume %s: %v", name, err)
		}
	})
	return name
}
