package containers

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// `make images` is what a user runs: it builds every program's image for linux/amd64 and
// linux/arm64 from host-built static binaries, with nothing pulled. This runs it as is (under a
// prefix and version of its own, into a temporary folder) and checks every image it tags: its
// architecture, the non-root user, the OCI labels, and the host-architecture tag. The arm64 images
// cannot run here (no emulation); that they are arm64 is read from the image configuration.
func TestMakeImages(t *testing.T) {
	requireDocker(t)
	t.Parallel()
	prefix, version := "mqdapr-test-"+suffix(), "test"
	cli := dockerClient(t)
	programs := []string{"mqbroker", "pubsub-mqtt5", "state-kv", "app", "devicesim", "daprd-watch"}
	var tags []string
	for _, p := range programs {
		for _, arch := range []string{"amd64", "arm64"} {
			tags = append(tags, prefix+"/"+p+":"+version+"-"+arch)
		}
		tags = append(tags, prefix+"/"+p+":"+version)
	}
	t.Cleanup(func() {
		for _, tag := range tags {
			if exec.Command("docker", "image", "inspect", tag).Run() == nil {
				removeImage(t, cli, tag)
			}
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "make", "-C", repoRoot(t), "images")
	cmd.Env = append(os.Environ(), "IMAGE_PREFIX="+prefix, "VERSION="+version, "IMAGES_OUT="+filepath.Join(t.TempDir(), "bin"))
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "make images:\n%s", out)

	for _, p := range programs {
		for _, arch := range []string{"amd64", "arm64"} {
			tag := prefix + "/" + p + ":" + version + "-" + arch
			b, err := exec.Command("docker", "image", "inspect", "--format",
				`{{.Os}}/{{.Architecture}} {{.Config.User}} {{index .Config.Labels "org.opencontainers.image.title"}} {{index .Config.Labels "org.opencontainers.image.version"}}`, tag).CombinedOutput()
			require.NoError(t, err, "make images did not tag %s: %s", tag, b)
			require.Equal(t, "linux/"+arch+" 65532:65532 "+p+" "+version, strings.TrimSpace(string(b)), tag)
		}
		host, err := exec.Command("docker", "image", "inspect", "--format", "{{.Id}}", prefix+"/"+p+":"+version).Output()
		require.NoError(t, err, "no host-architecture tag for %s", p)
		arch, err := exec.Command("docker", "image", "inspect", "--format", "{{.Id}}", prefix+"/"+p+":"+version+"-"+runtime.GOARCH).Output()
		require.NoError(t, err)
		require.Equal(t, string(arch), string(host), "%s:%s is the %s image", p, version, runtime.GOARCH)
	}
}
