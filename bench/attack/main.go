// Command attack runs the attacks of issue 13 against a roam Host, or the
// registry, on loopback, each beside an honest client, and reports the
// honest client's throughput and success, the victim's live heap and
// goroutines during and after, and how long it took to recover.
//
//	go run ./bench/attack            # every attack on a Host, 10 s each
//	go run ./bench/attack -quick     # 3 s each
//	go run ./bench/attack -run 'no acks'
//	go run ./bench/attack -target registry [-quick] [-run leases]
//
// The victim runs in a child process (for a Host, the same binary with
// ROAM_ATTACK_VICTIM set; for the registry, `roam registry`), so that its
// heap and goroutines are its own. The Host's attacks are host*.go; the
// registry's registry.go, run and reported by report.go.
package main

import (
	"flag"
	"fmt"
	"os"
	"regexp"
	"time"

	"github.com/roamnet/roam/sal"
)

func main() {
	quick := flag.Bool("quick", false, "3 s per attack instead of -duration")
	duration := flag.Duration("duration", 10*time.Second, "how long each attack lasts")
	calm := flag.Duration("calm", 3*time.Second, "how long the honest client runs alone first")
	run := flag.String("run", "", "run only the attacks whose name matches this regexp")
	target := flag.String("target", "host", "what to attack: host (a sal Host) or registry (roam registry)")
	flag.Parse()

	if os.Getenv(victimEnv) != "" {
		runVictim()
	}
	if *quick {
		*duration, *calm = 3*time.Second, 2*time.Second
	}
	match, err := regexp.Compile(*run)
	if err != nil {
		fatal(err)
	}
	switch *target {
	case "host":
		runTarget("host", hostTarget{}, match, *quick, *calm, *duration)
	case "registry":
		runRegistry(match, *quick, *calm, *duration)
	default:
		fatal(fmt.Errorf("unknown -target %q: host or registry", *target))
	}
}

// runVictim serves as the victim and exits.
func runVictim() {
	if err := serveVictim(sal.Config{}); err != nil {
		fmt.Fprintln(os.Stderr, "victim:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "attack:", err)
	os.Exit(1)
}
