package sal_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/sal"
)

// A provider that keeps its key in a file keeps its service names across
// restarts: the registry binds a name to the key that first registered
// it, and refuses any other key.
func ExampleLoadKey() {
	dir, _ := os.MkdirTemp("", "roam-example")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "provider.pem")

	mem := resolve.NewMemory()
	var ids []sal.ServiceID
	for range 2 { // a start, then a restart

		key, err := sal.LoadKey(path) // made on first use, read after
		if err != nil {
			fmt.Println(err)
			return
		}
		h, _ := sal.NewHost(sal.Config{Resolver: mem, Key: key, ListenAddr: "127.0.0.1:0"})
		l, err := h.Listen(context.Background(), "files.demo")
		if err != nil {
			fmt.Println(err)
			return
		}
		id, _ := sal.KeyID(key.Public()) // rk--<fingerprint>: names this key alone
		ids = append(ids, id)
		l.Close()
		h.Close()
	}
	fmt.Println("the restart kept the identity:", ids[0] == ids[1])
	// Output:
	// the restart kept the identity: true
}
