package testutil

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"testing"
	"time"
)

// Healthcheck runs the test binary itself as `<program> healthcheck args...`, as a container
// runtime runs the subcommand: env must hold the variable that makes the command's TestMain call
// main(). It returns the exit code and stdout; it fails t if the process cannot run or takes
// more than 30 s.
func Healthcheck(t testing.TB, env []string, args ...string) (code int, stdout string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], append([]string{"healthcheck"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.Output()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case ctx.Err() != nil:
		t.Fatalf("healthcheck %q did not finish: %v", args, ctx.Err())
	case errors.As(err, &exit):
		return exit.ExitCode(), string(out)
	default:
		t.Fatalf("healthcheck %q: %v", args, err)
	}
	return 0, ""
}
