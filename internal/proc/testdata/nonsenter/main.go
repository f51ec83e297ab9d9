// Command nonsenter uses proc without importing internal/nsenter, a mistake
// Start must report instead of running the command outside the sandbox.
package main

import (
	"fmt"
	"os"

	"github.com/tether-net/tether/internal/proc"
)

func main() {
	proc.Main()
	p, err := proc.Start(proc.Spec{NetNS: "/proc/self/ns/net", Args: []string{"true"}, Stderr: os.Stderr})
	if err != nil {
		fmt.Println(err)
		return
	}
	code, _ := p.Wait()
	fmt.Println("ran, exit", code)
}
