// Command tether is Tether's one binary: the daemon (tether daemon) and the
// command-line client of its API. The client (internal/cli) links nothing
// of the daemon; this package adds the daemon command to it. Run with
// CNI_COMMAND set (by a container runtime, as /opt/cni/bin/tether), it is
// a CNI plugin instead (internal/cniplugin), a client of the daemon too.
package main

import (
	"os"

	"github.com/tether-net/tether/internal/api"
	"github.com/tether-net/tether/internal/cli"
	"github.com/tether-net/tether/internal/cniplugin"
	_ "github.com/tether-net/tether/internal/nsenter" // setns before the Go runtime starts, for exec
	"github.com/tether-net/tether/internal/proc"
)

func main() {
	proc.Main() // a re-executed namespace helper does its job here and exits
	if os.Getenv("CNI_COMMAND") != "" {
		os.Exit(cniplugin.Main()) // run by a container runtime as its CNI plugin
	}
	os.Exit(cli.Execute(os.Args[1:], api.Version, daemonCmd()))
}
