// Command tether is Tether's one binary: the daemon (tether daemon) and the
// command-line client of its API. The client (internal/cli) links nothing
// of the daemon; this package adds the daemon command to it.
package main

import (
	"os"

	"github.com/tether-net/tether/internal/api"
	"github.com/tether-net/tether/internal/cli"
	_ "github.com/tether-net/tether/internal/nsenter" // setns before the Go runtime starts, for exec
	"github.com/tether-net/tether/internal/proc"
)

func main() {
	proc.Main() // a re-executed namespace helper does its job here and exits
	os.Exit(cli.Execute(os.Args[1:], api.Version, daemonCmd()))
}
