package api

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/tether-net/tether/internal/engine"
	"github.com/tether-net/tether/internal/portmap"
	"github.com/tether-net/tether/internal/stream"
)

func (s *Server) createSandbox(w http.ResponseWriter, r *http.Request) {
	var b SandboxCreateRequest
	if !decode(w, r, &b) {
		return
	}
	spec := engine.SandboxSpec{Name: b.Name, Hostname: b.Hostname, PID: b.PID, NetNSPath: b.NetNS, AutoRemove: b.AutoRemove}
	for i, a := range b.Networks {
		if len(a.Publish) > 0 {
			writeError(w, http.StatusBadRequest, fmt.Errorf("invalid Networks[%d].Publish: no longer accepted; use Networks[%d].PortBindings (Docker's PortBindings shape)", i, i))
			return
		}
		ports, err := portSpecs(fmt.Sprintf("Networks[%d].PortBindings", i), a.PortBindings)
		if err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		spec.Networks = append(spec.Networks, engine.AttachSpec{Network: a.Network, IP: a.IP, IP6: a.IP6, Aliases: a.Aliases, Ports: ports})
	}
	ports, err := portSpecs("PortBindings", b.PortBindings)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	spec.Ports = ports
	sb, err := s.eng.CreateSandbox(r.Context(), spec)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, s.sandboxView(sb))
}

func (s *Server) listSandboxes(w http.ResponseWriter, r *http.Request) {
	out := []Sandbox{}
	for _, sb := range s.eng.Sandboxes() {
		out = append(out, s.sandboxView(sb))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) inspectSandbox(w http.ResponseWriter, r *http.Request) {
	sb, err := s.eng.Sandbox(r.PathValue("id"))
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, s.sandboxView(sb))
}

func (s *Server) removeSandbox(w http.ResponseWriter, r *http.Request) {
	if err := s.eng.RemoveSandbox(r.Context(), r.PathValue("id"), boolQuery(r, "force")); err != nil {
		s.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) sandboxView(sb *engine.Sandbox) Sandbox {
	v := Sandbox{
		ID: sb.ID, Name: sb.Name, Hostname: sb.Hostname, Created: sb.Created, NetNS: sb.NetNS,
		Adopted: sb.Adopted, AdoptedPID: sb.AdoptedPID, AutoRemove: sb.AutoRemove, HandedOver: sb.Handover,
		Degraded: len(sb.Warnings) > 0, Warnings: sb.Warnings,
		Networks: map[string]*SandboxEndpoint{}, NetworkOrder: []string{}, Processes: []SandboxProcess{},
		NetworkSettings: SandboxNetworkSettings{Ports: PortMap{}},
	}
	for _, ep := range sb.Endpoints {
		name := s.eng.NetworkName(ep.NetworkID)
		aliases := ep.Aliases
		if aliases == nil {
			aliases = []string{}
		}
		v.Networks[name] = &SandboxEndpoint{
			NetworkID: ep.NetworkID, EndpointID: ep.ID, IfName: ep.IfName, HostIfName: ep.HostIfName,
			IPAddress: ep.Address.Addr(), IPPrefixLen: max(ep.Address.Bits(), 0), Gateway: ep.Gateway,
			GlobalIPv6Address: ep.Address6.Addr(), GlobalIPv6PrefixLen: max(ep.Address6.Bits(), 0), IPv6Gateway: ep.Gateway6,
			MacAddress: ep.MAC, Aliases: aliases,
		}
		v.NetworkOrder = append(v.NetworkOrder, name)
		for _, p := range ep.Ports {
			key := fmt.Sprintf("%d/%s", p.ContainerPort, p.Proto)
			v.NetworkSettings.Ports[key] = append(v.NetworkSettings.Ports[key], PortBinding{HostIP: p.HostIP.String(), HostPort: fmt.Sprint(p.HostPort)})
		}
	}
	for _, p := range sb.Procs {
		v.Processes = append(v.Processes, SandboxProcess{Pid: p.PID, Args: p.Args, Main: p.Main})
	}
	return v
}

// exec starts a command in a sandbox. Detached: answers 201 with the PID.
// Attached: the client must ask to upgrade to the stream protocol; the
// daemon answers 101 and carries stdio and the exit code as frames.
func (s *Server) exec(w http.ResponseWriter, r *http.Request) {
	var b ExecRequest
	if !decode(w, r, &b) {
		return
	}
	if len(b.Cmd) == 0 || b.Cmd[0] == "" {
		writeError(w, http.StatusBadRequest, errors.New("invalid Cmd: a command is required"))
		return
	}
	x := engine.ExecSpec{Args: b.Cmd, Env: b.Env, Dir: b.WorkingDir, Detach: b.Detach, Main: b.Main}
	if b.Detach {
		run, err := s.eng.Exec(r.Context(), r.PathValue("id"), x)
		if err != nil {
			s.fail(w, err)
			return
		}
		writeJSON(w, http.StatusCreated, ExecResponse{Pid: run.PID})
		return
	}
	if !strings.EqualFold(r.Header.Get("Upgrade"), StreamProtocol) {
		writeError(w, http.StatusBadRequest, fmt.Errorf("invalid request: an attached exec needs \"Upgrade: %s\"", StreamProtocol))
		return
	}
	s.execAttached(w, r, b, x)
}

func (s *Server) execAttached(w http.ResponseWriter, r *http.Request, b ExecRequest, x engine.ExecSpec) {
	// Validate the sandbox before hijacking, so a bad name is a plain 404.
	if _, err := s.eng.Sandbox(r.PathValue("id")); err != nil {
		s.fail(w, err)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		writeError(w, http.StatusInternalServerError, errors.New("connection cannot be upgraded"))
		return
	}
	conn, buf, err := hj.Hijack()
	if err != nil {
		s.log.Error("hijack", "err", err)
		return
	}
	defer conn.Close()
	fmt.Fprintf(buf, "HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.tether.stream\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", StreamProtocol)
	if err := buf.Flush(); err != nil {
		return
	}
	out, errw := stream.NewWriters(conn)
	x.Stdout, x.Stderr = out, errw
	if b.Stdin {
		x.Stdin = stream.StdinReader(bufio.NewReader(io.MultiReader(buf.Reader, conn)))
	}
	run, err := s.eng.Exec(r.Context(), r.PathValue("id"), x)
	if err != nil {
		fmt.Fprintf(errw, "tether: %v\n", err)
		_ = stream.WriteExit(out, 126)
		return
	}
	<-run.Done
	_ = stream.WriteExit(out, run.ExitCode)
}

// portSpecs reads the PortBindings of a request body (field names it in the
// error, answered as 400 before the engine is asked anything).
func portSpecs(field string, m PortMap) ([]portmap.Spec, error) {
	specs, err := m.ToSpecs()
	if err != nil {
		return nil, fmt.Errorf("invalid %s: %w", field, err)
	}
	return specs, nil
}
