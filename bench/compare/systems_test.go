package compare

// The systems compared: each creates one sandbox/container with a process
// and N published ports, checks it (outside the timing) and removes it.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tether-net/tether/bench/attach"
	"github.com/tether-net/tether/bench/docker"
	"github.com/tether-net/tether/internal/api"
)

// Kinds of figures: an API round trip, or a whole command's run time.
const (
	kindAPI = "api"
	kindCLI = "cli"
)

// Row names.
const (
	sysTether       = "Tether"
	sysTetherNoProc = "Tether, no process"
	sysDocker       = "Docker"
	sysDockerNP     = "Docker, userland-proxy false"
	sysTetherCLI    = "tether run -d"
	sysDockerCLI    = "docker run -d"
	sysPodmanCLI    = "podman run -d"
)

// proc is the process every system starts in its sandbox/container.
var proc = []string{"sleep", "3600"}

type system struct {
	name, kind string
	// ns is the network namespace (name under /run/netns) where the
	// system's host-side veths live; its link events time the removal.
	ns string
	// create makes the sandbox/container with the bindings and returns the
	// ID remove and check take, and the time.
	create func(name string, bs []docker.Binding) (string, time.Duration, error)
	// check verifies, untimed, that id runs its process and publishes n ports.
	check  func(id string, n int) error
	remove func(id string) (time.Duration, error)
}

// tetherAPI is Tether driven over its unix socket with net/http.
type tetherAPI struct{ t *attach.Tether }

// portBindings is the bindings in Docker's HostConfig.PortBindings shape.
func portBindings(bs []docker.Binding) api.PortMap {
	pm := api.PortMap{}
	for _, b := range bs {
		key := strconv.Itoa(b.ContainerPort) + "/tcp"
		pm[key] = append(pm[key], api.PortBinding{HostIP: "0.0.0.0", HostPort: strconv.Itoa(b.HostPort)})
	}
	return pm
}

// create is POST /tether/v1/sandboxes on the default network "bridge" with
// the port bindings and, with withProc, POST …/exec of a detached main
// process (what `tether run -d` sends); timed from the first request to the
// last answer.
func (a tetherAPI) create(name string, bs []docker.Binding, withProc bool) (string, time.Duration, error) {
	body, _ := json.Marshal(api.SandboxCreateRequest{Name: name,
		Networks: []api.NetworkAttach{{Network: "bridge"}}, PortBindings: portBindings(bs)})
	var x []byte
	if withProc {
		x, _ = json.Marshal(api.ExecRequest{Cmd: proc, Detach: true, Main: true})
	}
	start := time.Now()
	code, out, err := a.t.Call(http.MethodPost, "/tether/v1/sandboxes", body)
	if err == nil && code != http.StatusCreated {
		err = fmt.Errorf("create sandbox %q: %d %s", name, code, out)
	}
	if err == nil && withProc {
		code, out, err = a.t.Call(http.MethodPost, "/tether/v1/sandboxes/"+name+"/exec", x)
		if err == nil && code != http.StatusCreated {
			err = fmt.Errorf("exec in sandbox %q: %d %s", name, code, out)
		}
	}
	return name, time.Since(start), err
}

// check reads the sandbox back: n published ports, and procs processes.
func (a tetherAPI) check(name string, n, procs int) error {
	code, out, err := a.t.Call(http.MethodGet, "/tether/v1/sandboxes/"+name, nil)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("inspect sandbox %q: %d %s", name, code, out)
	}
	var sb api.Sandbox
	if err := json.Unmarshal(out, &sb); err != nil {
		return err
	}
	got := 0
	for _, b := range sb.NetworkSettings.Ports {
		got += len(b)
	}
	if got != n || len(sb.Processes) != procs {
		return fmt.Errorf("sandbox %q: %d ports, %d processes; want %d, %d", name, got, len(sb.Processes), n, procs)
	}
	return nil
}

// remove is DELETE /tether/v1/sandboxes/NAME?force=1 (kills its processes).
func (a tetherAPI) remove(name string) (time.Duration, error) {
	start := time.Now()
	code, out, err := a.t.Call(http.MethodDelete, "/tether/v1/sandboxes/"+name+"?force=1", nil)
	took := time.Since(start)
	if err == nil && code != http.StatusNoContent {
		err = fmt.Errorf("remove sandbox %q: %d %s", name, code, out)
	}
	return took, err
}

// timedTether runs the tether CLI against the daemon and times the process.
func timedTether(t *attach.Tether, args ...string) (string, time.Duration, error) {
	start := time.Now()
	out, err := t.D.Tether(args...)
	took := time.Since(start)
	if err != nil {
		return out, took, fmt.Errorf("tether %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return out, took, nil
}

// systems returns the rows; dk.Refs.DockerCLI == "" drops `docker run -d`.
// dknp is a second dockerd with "userland-proxy": false (no docker-proxy
// process per port: Docker's cheapest publishing).
func systems(t *attach.Tether, dk, dknp *docker.Docker, pm *docker.Podman) []system {
	a := tetherAPI{t}
	checkOn := func(dk *docker.Docker) func(id string, n int) error {
		return func(id string, n int) error {
			got, err := dk.Published(id)
			if err == nil && got != n {
				err = fmt.Errorf("container %s publishes %d ports, want %d", id, got, n)
			}
			return err
		}
	}
	dockerCheck := checkOn(dk)
	s := []system{
		{sysTether, kindAPI, t.NS,
			func(name string, bs []docker.Binding) (string, time.Duration, error) { return a.create(name, bs, true) },
			func(id string, n int) error { return a.check(id, n, 1) }, a.remove},
		{sysTetherNoProc, kindAPI, t.NS,
			func(name string, bs []docker.Binding) (string, time.Duration, error) {
				return a.create(name, bs, false)
			},
			func(id string, n int) error { return a.check(id, n, 0) }, a.remove},
		{sysDocker, kindAPI, dk.Host.NS,
			func(name string, bs []docker.Binding) (string, time.Duration, error) {
				return dk.Run(name, bs, proc...)
			},
			dockerCheck, dk.Remove},
		{sysDockerNP, kindAPI, dknp.Host.NS,
			func(name string, bs []docker.Binding) (string, time.Duration, error) {
				return dknp.Run(name, bs, proc...)
			},
			checkOn(dknp), dknp.Remove},
		{sysTetherCLI, kindCLI, t.NS,
			func(name string, bs []docker.Binding) (string, time.Duration, error) {
				args := append(append([]string{"run", "-d", "--name", name}, docker.Flags(bs)...), "--")
				_, took, err := timedTether(t, append(args, proc...)...)
				return name, took, err
			},
			func(id string, n int) error { return a.check(id, n, 1) },
			func(id string) (time.Duration, error) {
				_, took, err := timedTether(t, "rm", "-f", id)
				return took, err
			}},
		{sysPodmanCLI, kindCLI, pm.Host.NS,
			func(name string, bs []docker.Binding) (string, time.Duration, error) {
				_, took, err := pm.Run(name, bs, proc...)
				return name, took, err
			},
			func(id string, n int) error {
				got, err := pm.Published(id)
				if err == nil && got != n {
					err = fmt.Errorf("container %s publishes %d ports, want %d", id, got, n)
				}
				return err
			}, pm.Remove},
	}
	if dk.Refs.DockerCLI != "" {
		s = append(s, system{sysDockerCLI, kindCLI, dk.Host.NS,
			func(name string, bs []docker.Binding) (string, time.Duration, error) {
				args := append(append([]string{"run", "-d", "--name", name}, docker.Flags(bs)...), docker.Image)
				out, took, err := dk.CLI(append(args, proc...)...)
				return strings.TrimSpace(out), took, err
			},
			dockerCheck,
			func(id string) (time.Duration, error) {
				_, took, err := dk.CLI("rm", "-f", id)
				return took, err
			}})
	}
	return s
}
