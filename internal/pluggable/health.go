package pluggable

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	proto "github.com/dapr/dapr/pkg/proto/components/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/mqdapr/mqdapr/internal/healthcheck"
)

// Kind is the building block a pluggable component serves, which decides the gRPC service its
// Ping belongs to.
type Kind int

// The kinds of component mqdapr has.
const (
	PubSub Kind = iota
	StateStore
)

// Ping probes a pluggable component on its unix socket with the gRPC Ping every component
// serves (the call daprd makes), over one connection that it closes. Unhealthy when the socket is
// missing, refuses the connection, or Ping fails or does not return within ctx.
func Ping(ctx context.Context, socket string, kind Kind) (string, error) {
	if _, err := os.Stat(socket); err != nil {
		return "", err
	}
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	switch kind {
	case PubSub:
		_, err = proto.NewPubSubClient(conn).Ping(ctx, &proto.PingRequest{}, grpc.WaitForReady(false))
	case StateStore:
		_, err = proto.NewStateStoreClient(conn).Ping(ctx, &proto.PingRequest{}, grpc.WaitForReady(false))
	default:
		return "", fmt.Errorf("unknown component kind %d", kind)
	}
	if err != nil {
		return "", fmt.Errorf("%s: Ping: %w", socket, err)
	}
	return socket + " answered Ping", nil
}

// The environment variables that components-go-sdk reads for its socket folder, in its order, and
// its default (components-go-sdk v0.3.0 service.go).
const (
	socketsFolderEnv         = "DAPR_COMPONENT_SOCKETS_FOLDER"
	socketsFolderFallbackEnv = "DAPR_COMPONENT_SOCKET_FOLDER"
	defaultSocketsFolder     = "/tmp/dapr-components-sockets"
)

// SocketPath is where components-go-sdk serves the component registered as name:
// <folder>/<name>.sock, the folder taken from the environment as the SDK does.
func SocketPath(name string) string {
	dir, ok := os.LookupEnv(socketsFolderEnv)
	if !ok {
		if dir, ok = os.LookupEnv(socketsFolderFallbackEnv); !ok {
			dir = defaultSocketsFolder
		}
	}
	return filepath.Join(dir, name+".sock")
}

// Healthcheck is the `healthcheck` subcommand of the component command serving name: one Ping on
// the socket the server uses (-socket overrides), one line on stdout, and the exit code (0
// healthy, 1 not, 2 bad arguments). A container runtime runs it in the shell-less image.
func Healthcheck(args []string, stdout io.Writer, name string, kind Kind) int {
	fs := flag.NewFlagSet(name+" healthcheck", flag.ContinueOnError)
	socket := fs.String("socket", SocketPath(name), "the component's unix socket (default: where the server puts it, from DAPR_COMPONENT_SOCKETS_FOLDER)")
	return healthcheck.Main(fs, args, stdout, func() healthcheck.Probe {
		return func(ctx context.Context) (string, error) { return Ping(ctx, *socket, kind) }
	})
}
