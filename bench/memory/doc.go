// Package memory measures what a sandbox costs the daemon in memory (issue
// 19): a real daemon (started with -D, so /debug/pprof and /debug/vars
// answer on its socket) in a network namespace the test creates, measured
// idle and after N sandboxes, for three kinds of sandbox:
//
//   - run:     on a user-defined network, with a detached main process
//     (what `tether run -d --network NET sleep ...` makes): the process, its
//     supervision and the embedded resolver that starts with it;
//   - run-default: on the default bridge, with a detached main process: no
//     embedded resolver (Docker's default bridge has none);
//   - bare:    on the user-defined network, no process (no resolver either).
//
// run − run-default is the resolver's share, run-default − bare the
// process's (start, supervision, records), bare the sandbox's own.
//
// Each figure is read after two forced collections (GET
// /debug/pprof/heap?gc=1 runs runtime.GC) and a one-second pause: VmRSS,
// RssAnon and RssFile of /proc/PID/status, the OS threads (Threads, and
// what each thread waits in, /proc/PID/task/*/wchan), the goroutines
// (/debug/pprof/goroutine), the Go runtime's own figures (runtime.MemStats
// from /debug/vars: heap in use, goroutine stacks, spans, Sys), open file
// descriptors and the size of the data root (the bolt store is mapped, so
// its pages count in RssFile). Freed heap the runtime has not yet returned
// to the kernel still counts in VmRSS; HeapInuse does not.
//
// With BENCH_BASE_BIN=PATH (a tether binary built at another commit) every
// kind also runs on that binary, interleaved in the same rounds, for a
// before/after in one run.
package memory
