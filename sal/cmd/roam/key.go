package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/roamnet/roam/sal"
)

// runKey: roam key [FILE] makes the key if FILE does not exist, and
// prints the self-certifying service ID it gives ("rk--..."), which only
// a Host holding that key can serve.
func runKey(c *cli, ctx context.Context, args []string) error {
	set := c.flags("key", "[FILE]", "make or show an identity, and print the self-certifying service ID it gives")
	if err := c.parse(set, args, -1); err != nil {
		return err
	}
	path, err := keyPath(set.Arg(0))
	if err != nil {
		return err
	}
	_, err = os.Stat(path)
	made := errors.Is(err, fs.ErrNotExist)
	key, err := sal.LoadKey(path)
	if err != nil {
		return err
	}
	id, err := sal.KeyID(key.Public())
	if err != nil {
		return err
	}
	if made {
		fmt.Fprintf(c.stderr, "roam key: made %s\n", path)
	}
	fmt.Fprintln(c.stdout, id)
	return nil
}
