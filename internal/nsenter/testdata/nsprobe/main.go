// Command nsprobe prints the namespaces it runs in and whether the nsenter
// variables are still in its environment. Used by the nsenter tests to check
// a statically linked binary.
package main

import (
	"fmt"
	"os"

	_ "github.com/tether-net/tether/internal/nsenter"
)

func main() {
	for _, kind := range []string{"net", "uts", "mnt"} {
		l, err := os.Readlink("/proc/self/ns/" + kind)
		if err != nil {
			fmt.Println(kind, "error", err)
			continue
		}
		fmt.Println(kind, l)
	}
	_, set := os.LookupEnv("_TETHER_NSENTER")
	fmt.Println("env", set)
}
