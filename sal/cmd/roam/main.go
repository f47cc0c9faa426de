// Command roam puts programs that know nothing of roam on it, and runs
// what an operator needs around it:
//
//	roam serve SERVICE tcp://HOST:PORT   expose a TCP server as a roam service
//	roam forward [-listen ADDR] SERVICE  a local TCP port whose connections are flows to SERVICE
//	roam dial SERVICE                    stdin and stdout as one flow (ssh's ProxyCommand)
//	roam resolve SERVICE                 what the resolver answers
//	roam ping SERVICE                    whether each endpoint serves SERVICE, with RTTs
//	roam registry                        the embedded registry's daemon
//	roam key [FILE]                      make or show an identity, and its service ID
//
// The TCP legs stay on this machine, so a move of either end, a new
// address, a NAT rebinding or a handover, never reaches the programs: the
// flow between the two roam Hosts resumes, byte-exact, and the TCP
// connections on either side never see it.
//
// The resolver comes from -resolver or ROAM_RESOLVER (a registry:// URL,
// which `roam registry` prints, dns://, etcd://, or static:), the Host's
// identity from -key FILE, made on first use (by default under the user's
// config directory, so that a restarted `roam serve` keeps its name).
// Long-running commands log with slog to stderr, show a status line there
// when it is a terminal, and end cleanly on SIGINT or SIGTERM: they close
// their flows and withdraw their registrations.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/roamnet/roam/sal"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := newCLI().run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}

// cli is one run of the command, with its standard streams, so that tests
// run it in-process.
type cli struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	// hostMade, if set, sees every Host a command makes (tests move it).
	hostMade func(*sal.Host)
	// terminal says whether stderr is a terminal a person watches: then
	// long-running commands keep a status line there.
	terminal bool
}

func newCLI() *cli {
	c := &cli{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr}
	if fi, err := os.Stderr.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		c.terminal = os.Getenv("TERM") != "dumb"
	}
	return c
}

type command struct {
	run  func(c *cli, ctx context.Context, args []string) error
	args string // what follows the flags, for the usage line
	what string
}

var commands map[string]command

func init() { // (an initialization cycle through usage otherwise)
	commands = map[string]command{
		"serve":    {runServe, "SERVICE tcp://HOST:PORT", "expose a TCP server as a roam service"},
		"forward":  {runForward, "SERVICE", "a local TCP port whose every connection is a flow to SERVICE"},
		"dial":     {runDial, "SERVICE", "stdin and stdout as one flow to SERVICE (ssh's ProxyCommand)"},
		"resolve":  {runResolve, "SERVICE", "what the resolver answers for SERVICE"},
		"ping":     {runPing, "SERVICE", "whether each endpoint of SERVICE serves it, with RTTs"},
		"registry": {runRegistry, "", "serve the embedded registry"},
		"key":      {runKey, "[FILE]", "make or show an identity, and print its service ID"},
	}
}

// usageError is a mistake in the command line: exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

// run runs the command line args and returns the exit status: 0, 1 for a
// failure, 2 for a usage error.
func (c *cli) run(ctx context.Context, args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help" {
		c.usage(c.stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(c.stderr, "roam: unknown command %q\n", args[0])
		c.usage(c.stderr)
		return 2
	}
	err := cmd.run(c, ctx, args[1:])
	var ue *usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(c.stderr, "roam %s: %s\nusage: roam %s [flags] %s (roam %[1]s -h for the flags)\n", args[0], ue.msg, args[0], cmd.args)
		return 2
	default:
		fmt.Fprintf(c.stderr, "roam %s: %v\n", args[0], err)
		return 1
	}
}

func (c *cli) usage(w io.Writer) {
	fmt.Fprintln(w, "usage: roam COMMAND [flags] [args]")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-9s %-24s %s\n", n, commands[n].args, commands[n].what)
	}
	fmt.Fprintln(w, "The resolver comes from -resolver or ROAM_RESOLVER; see roam COMMAND -h.")
}

// flags makes a command's flag set, which reports errors rather than
// exiting, so that in-process tests and the exit status stay in run's hands.
func (c *cli) flags(name, args, what string) *flag.FlagSet {
	set := flag.NewFlagSet(name, flag.ContinueOnError)
	set.SetOutput(c.stderr)
	set.Usage = func() {
		fmt.Fprintf(c.stderr, "usage: roam %s [flags] %s\n%s.\n", name, args, capitalize(what))
		set.PrintDefaults()
	}
	return set
}

// parse parses args and checks that want positional arguments follow the
// flags (-1: any number up to one).
func (c *cli) parse(set *flag.FlagSet, args []string, want int) error {
	if err := set.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &usageError{err.Error()} // the flag package printed the details
	}
	switch n := set.NArg(); {
	case want < 0 && n > 1:
		return usagef("at most one argument, got %d: %s", n, strings.Join(set.Args(), " "))
	case want >= 0 && n != want:
		if n < want {
			return usagef("missing arguments")
		}
		return usagef("too many arguments: %s", strings.Join(set.Args()[want:], " "))
	}
	return nil
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
