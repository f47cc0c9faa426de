package trace

import (
	"bytes"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"
)

//go:embed profiles/*.trace profiles/*/*.trace
var profileFS embed.FS

// HSR300Seed is the seed with which hsr-300.trace was drawn from HSR300();
// a test keeps the file and the generator in step.
const HSR300Seed = 300

// Profiles returns the names of the shipped profiles, sorted: "hsr-300"
// (a 10 min ride at 300 km/h; figures and sources in its header) and
// "wired" (a calm wired path).
func Profiles() []string {
	ents, _ := profileFS.ReadDir("profiles")
	var names []string
	for _, e := range ents {
		if !e.IsDir() { // a directory is a multi-carrier profile
			names = append(names, strings.TrimSuffix(e.Name(), ".trace"))
		}
	}
	slices.Sort(names)
	return names
}

// Profile parses the named shipped profile. An unknown name yields an
// error that wraps fs.ErrNotExist.
func Profile(name string) (*Trace, error) {
	src, err := ProfileSource(name)
	if err != nil {
		return nil, err
	}
	return parse(bytes.NewReader(src), name+".trace")
}

// ProfileSource returns the text of the named shipped profile, header
// comments included.
func ProfileSource(name string) ([]byte, error) {
	b, err := profileFS.ReadFile(path.Join("profiles", name+".trace"))
	if err != nil {
		return nil, fmt.Errorf("trace: no profile %q (have %s): %w",
			name, strings.Join(Profiles(), ", "), fs.ErrNotExist)
	}
	return b, nil
}
