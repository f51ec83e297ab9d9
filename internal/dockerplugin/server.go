package dockerplugin

// The HTTP side: POST /<Method> with a JSON body (empty for the calls
// without arguments), answered with MediaType. Bad input is a 400 whose
// body names the field, in both error fields (dockerd reads "Err" from any
// non-200 answer). A failure of a well-formed call is a 200 with "Err"
// (network driver) or "Error" (IPAM), as remote.md and ipam.md specify.
// Calls Tether does not implement are 404, which dockerd tolerates where
// they are optional.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// maxBody bounds a request body (dockerd's are a few KiB).
const maxBody = 1 << 20

// Handler serves one plugin socket: scope "local" (tether) or "global"
// (tether-overlay); both implement the network driver and the IPAM.
func (p *Plugin) Handler(scope string) http.Handler {
	mux := http.NewServeMux()
	h := func(path string, f func(ctx context.Context, body []byte) (any, error)) {
		mux.HandleFunc("POST "+path, func(w http.ResponseWriter, r *http.Request) {
			body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
			if err != nil {
				p.answer(w, path, nil, badField("body", "%v", err))
				return
			}
			if len(body) > maxBody {
				p.answer(w, path, nil, badField("body", "larger than %d bytes", maxBody))
				return
			}
			resp, err := f(r.Context(), body)
			p.answer(w, path, resp, err)
		})
	}
	none := func(f func() (any, error)) func(context.Context, []byte) (any, error) {
		return func(context.Context, []byte) (any, error) { return f() }
	}
	h("/Plugin.Activate", none(func() (any, error) {
		return activateResponse{Implements: []string{NetworkDriver, IpamDriver}}, nil
	}))
	h("/NetworkDriver.GetCapabilities", none(func() (any, error) { return p.capabilities(scope) }))
	h("/NetworkDriver.CreateNetwork", call(func(ctx context.Context, r createNetworkRequest) (any, error) {
		return p.createNetwork(ctx, scope, r)
	}))
	h("/NetworkDriver.DeleteNetwork", call(p.deleteNetwork))
	h("/NetworkDriver.CreateEndpoint", call(p.createEndpoint))
	h("/NetworkDriver.DeleteEndpoint", call(p.deleteEndpoint))
	h("/NetworkDriver.EndpointOperInfo", call(p.endpointInfo))
	h("/NetworkDriver.Join", call(p.join))
	h("/NetworkDriver.Leave", call(p.leave))
	h("/NetworkDriver.ProgramExternalConnectivity", call(p.programExternal))
	h("/NetworkDriver.RevokeExternalConnectivity", call(p.revokeExternal))
	h("/IpamDriver.GetCapabilities", none(func() (any, error) { return ipamCapabilitiesResponse{}, nil }))
	h("/IpamDriver.GetDefaultAddressSpaces", none(p.addressSpaces))
	h("/IpamDriver.RequestPool", call(p.requestPool))
	h("/IpamDriver.ReleasePool", call(p.releasePool))
	h("/IpamDriver.RequestAddress", call(p.requestAddress))
	h("/IpamDriver.ReleaseAddress", call(p.releaseAddress))
	// Everything else (DiscoverNew, DiscoverDelete, AllocateNetwork,
	// FreeNetwork, GwAllocCheck: swarm or unadvertised) is not implemented.
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		msg := fmt.Sprintf("%s %s is not implemented by Tether", r.Method, r.URL.Path)
		writeJSON(w, http.StatusNotFound, map[string]string{"Err": msg, "Error": msg})
	})
	return mux
}

// call decodes a request body into T (an empty body is refused: every
// call with arguments has some) and runs f.
func call[T any](f func(context.Context, T) (any, error)) func(context.Context, []byte) (any, error) {
	return func(ctx context.Context, body []byte) (any, error) {
		var req T
		if len(strings.TrimSpace(string(body))) == 0 {
			return nil, badField("body", "empty; this call takes a JSON object")
		}
		if err := json.Unmarshal(body, &req); err != nil {
			return nil, badField("body", "%s", jsonErr(err))
		}
		return f(ctx, req)
	}
}

// jsonErr names the field a type error is about.
func jsonErr(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return fmt.Sprintf("field %s: %s is not a %s", te.Field, te.Value, te.Type)
	}
	return err.Error()
}

// answer writes resp, or err in the field the method's subsystem uses.
func (p *Plugin) answer(w http.ResponseWriter, path string, resp any, err error) {
	if err == nil {
		writeJSON(w, http.StatusOK, resp)
		return
	}
	var fe *fieldError
	if errors.As(err, &fe) {
		p.log.Info("refused a malformed call", "call", path, "err", err)
		writeJSON(w, http.StatusBadRequest, map[string]string{"Err": err.Error(), "Error": err.Error()})
		return
	}
	p.log.Warn("call failed", "call", path, "err", err)
	if strings.HasPrefix(path, "/IpamDriver.") {
		writeJSON(w, http.StatusOK, ipamResponse{Error: err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, driverResponse{Err: err.Error()})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", MediaType)
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
