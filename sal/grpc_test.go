package sal_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/sal"
)

// A gRPC client and server talk over roam in the form the README and the
// package documentation give: grpc.WithContextDialer(h.DialAddr) with a
// passthrough:/// target. The server sees the caller as a sal.Addr naming
// the dialing Host's key, and the call's reply comes back.
func TestGRPCOverRoam(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mem := resolve.NewMemory()
	server, err := sal.NewHost(sal.Config{Resolver: mem, ListenAddr: "127.0.0.1:0"})
	require.NoError(t, err)
	defer server.Close()
	l, err := server.Listen(ctx, "grpc.demo")
	require.NoError(t, err)

	callers := make(chan net.Addr, 1)
	srv := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if p, ok := peer.FromContext(ctx); ok {
			select {
			case callers <- p.Addr:
			default:
			}
		}
		return handler(ctx, req)
	}))
	hs := health.NewServer()
	hs.SetServingStatus("greeter", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("sleeper", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()

	client, err := sal.NewHost(sal.Config{Resolver: mem, ListenAddr: "127.0.0.1:0"})
	require.NoError(t, err)
	defer client.Close()
	cc, err := grpc.NewClient("passthrough:///grpc.demo",
		grpc.WithContextDialer(client.DialAddr),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)

	hc := healthpb.NewHealthClient(cc)
	resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "greeter"})
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, resp.GetStatus())
	resp, err = hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "sleeper"})
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, resp.GetStatus())

	caller := <-callers
	require.IsType(t, sal.Addr{}, caller)
	require.Equal(t, "rk--"+client.Key().String(), caller.(sal.Addr).Service.String(), "the server sees the caller by its key")
	_, _, err = net.SplitHostPort(caller.String())
	require.NoError(t, err)

	require.NoError(t, cc.Close())
	srv.Stop()
	require.NoError(t, <-served)
	hs.Shutdown()
}
