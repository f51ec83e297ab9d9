// Command sandbox runs the whole sandbox flow from one binary (built
// statically by the tests): prepare the ns dir given as the argument,
// create a netns, run `hostname` inside new mount and UTS namespaces, and clean up.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/tether-net/tether/internal/netns"
	_ "github.com/tether-net/tether/internal/nsenter"
	"github.com/tether-net/tether/internal/proc"
)

func main() {
	proc.Main()
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(dir string) error {
	if err := netns.PrepareDir(dir); err != nil {
		return err
	}
	defer netns.ReleaseDir(dir)
	s := proc.Spec{NetNS: filepath.Join(dir, "net"), New: &proc.NewNS{Hostname: "static-sandbox", NSDir: dir},
		Args: []string{"hostname"}, Stdout: os.Stdout, Stderr: os.Stderr}
	defer func() { _ = netns.Delete(s.NetNS) }()
	if err := netns.Create(s.NetNS); err != nil {
		return err
	}
	p, err := proc.Start(s)
	if err != nil {
		return err
	}
	code, err := p.Wait()
	if code != 0 {
		return fmt.Errorf("hostname exited %d (%v)", code, err)
	}
	return err
}
