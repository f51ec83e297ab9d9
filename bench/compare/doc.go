// Package compare is scenario 7 of the benchmarks: port publishing against
// current Docker and Podman measured in the same run. For N published ports
// (0, 1, 10, 50, 200), each system creates a sandbox/container with a
// process and N ports, then removes it; figures are medians of BENCH_REPS
// repetitions, interleaved (the order of the systems rotates), and every
// create is checked (N ports published, the process running) outside the
// timing.
//
//   - API round trips: Tether (POST /tether/v1/sandboxes with PortBindings on
//     the default network, then a detached main process `sleep 3600`, as
//     `tether run -d` does; DELETE ?force=1) against Docker through the moby
//     Go client (ContainerCreate + ContainerStart of busybox `sleep 3600`;
//     ContainerRemove with Force). Tether without the process is shown too,
//     and Docker with "userland-proxy": false (no docker-proxy process per
//     port, Docker's cheapest publishing; the targets use Docker's default).
//   - Whole commands, where Podman (no daemon) can take part: `tether run -d`,
//     `docker run -d` (stock CLI) and `podman run -d`; removal `tether rm -f`,
//     `docker rm -f`, `podman rm -f -t 0`.
//
// Every removal is also timed until the container's host-side veths are
// gone (their RTM_DELLINK in the engine's host namespace, bench/attach's
// LinkWatch): Docker and Podman delete them before they answer, Tether's
// namespace teardown after, so removals are compared on the later of the
// answer and the links gone.
//
// N = 0 is the plain attach (a container on the bridge network, no port).
// Each engine runs on its own test-owned network and mount namespaces
// (bench/attach.StartTether, bench/docker). Entry point:
// `sudo bench/run.sh docker`; the smoke test runs under TETHER_E2E=1.
package compare
