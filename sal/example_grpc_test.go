package sal_test

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/sal"
)

// gRPC runs over services unchanged: the server serves on a Listener, and
// the client dials through Host.DialAddr, with the service ID as a
// passthrough target and the transport security left to roam.
func ExampleHost_DialAddr() {
	ctx := context.Background()
	mem := resolve.NewMemory()

	server, _ := sal.NewHost(sal.Config{Resolver: mem, ListenAddr: "127.0.0.1:0"})
	defer server.Close()
	l, _ := server.Listen(ctx, "grpc.demo")
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer()) // reports "" as SERVING
	go srv.Serve(l)
	defer srv.Stop()

	client, _ := sal.NewHost(sal.Config{Resolver: mem, ListenAddr: "127.0.0.1:0"})
	defer client.Close()
	cc, err := grpc.NewClient("passthrough:///grpc.demo",
		grpc.WithContextDialer(client.DialAddr),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cc.Close()
	resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(resp.GetStatus())
	// Output: SERVING
}
