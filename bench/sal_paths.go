package main

import (
	"errors"
	"reflect"

	"github.com/roamnet/roam/sal"
)

// errNoPaths says that this sal cannot use several paths at once.
var errNoPaths = errors.New("sal has no Config.Paths yet (issue 14)")

// setPaths sets cfg.Paths, and reports whether sal has that field. It
// goes by reflection only so that the bench builds on a sal from before
// Config.Paths; once every branch has it, this is cfg.Paths = paths.
func setPaths(cfg *sal.Config, paths []string) bool {
	if len(paths) == 0 {
		return true
	}
	f := reflect.ValueOf(cfg).Elem().FieldByName("Paths")
	if !f.IsValid() || f.Type() != reflect.TypeFor[[]string]() {
		return false
	}
	f.Set(reflect.ValueOf(paths))
	return true
}

// salHasPaths reports whether sal.Config has Paths.
func salHasPaths() bool {
	var cfg sal.Config
	return setPaths(&cfg, []string{"x"})
}
