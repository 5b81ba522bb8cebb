// Package tuning is Meshward's runtime-tuning agent for Go programs
// (docs/adr/0007-runtime-tuning.md, issue #7): it reports the process's memory
// situation to the control plane and applies the GOMEMLIMIT and GOGC values the
// control plane computes. The formula lives in the control plane only, so every
// language's agent behaves the same and a policy change needs no redeploy; this
// package measures, reports and applies, nothing more. It uses the standard library
// only, so embedding it adds no dependency to an application.
//
// # Protocol (HTTP, ADR 0007 "Delivery")
//
//   - POST {ControlPlane}/tuning/v1/report with {"nodeId", "namespace", "workload",
//     "labels", "pod", "container", "memoryLimitBytes", "liveHeapBytes", "agent"}; the
//     reply (200) is the current settings document, applied at once.
//   - GET {ControlPlane}/tuning/v1/settings/{nodeId}?wait=30s with
//     If-None-Match: "<version>" long-polls: 200 + the document when it differs, 304
//     when the wait passed unchanged, 404 when the control plane has no report from
//     this node (for example after it restarted): the agent then reports again
//     (and applies the reply if its version is new).
//
// Reports are sent every Config.ReportInterval (default 5 s) and as soon as the live
// heap moved by more than 10 % since the last report (sampled every ReportInterval/5,
// at most once a second). Failures back off exponentially from 200 ms to 5 s (with a
// little jitter so a fleet does not reconnect in lockstep); the agent never retries in
// a tight loop, and every request carries a timeout (the long-poll wait plus a
// margin), so a silent control plane cannot hang it.
//
// # Applying
//
// When the agent starts it records the process's own settings: the memory limit from
// debug.SetMemoryLimit(-1) (which reflects GOMEMLIMIT) and GOGC by swapping
// debug.SetGCPercent. A document with memoryLimitBytes / gcPercent sets them with
// debug.SetMemoryLimit / debug.SetGCPercent; a document without one restores the
// recorded starting value, so removing a policy gives the application back its own
// configuration. A negative gcPercent (GOGC=off) or a memory limit ≤ 0 is refused:
// the control plane never produces them (ADR 0007 "Guard rails") and applying them
// would disable the collector or make it run continuously; the previous value is
// kept and the refusal is reported through Config.OnError and Applied.Refused.
// After applying, both values are read back from the runtime and handed to
// Config.OnApply, so what is reported is what the runtime actually uses. When Run
// returns, the last applied values stay in force (as during a control-plane outage).
//
// # What is measured
//
// The memory limit is Config.MemoryLimitOverride when set, otherwise the cgroup limit
// (v2 memory.max, v1 memory/memory.limit_in_bytes under Config.CgroupRoot; "max" or a
// value ≥ 2^60 means none and is reported as 0).
//
// The live heap H is the heap still reachable after the last garbage collection:
//
//   - Go ≥ 1.21: runtime/metrics "/gc/heap/live:bytes", exactly that number.
//   - Go 1.19 and 1.20 (the metric does not exist there; detected through
//     metrics.All(), not the version string): an estimate from the heap goal,
//     H ≈ "/gc/heap/goal:bytes" × 100 / (100 + GOGC), capped by
//     "/memory/classes/heap/objects:bytes" (allocated objects, which always include
//     the live heap). The Go ≥ 1.18 pacer sets goal = H + (H + stacks + globals) ×
//     GOGC/100, so the estimate is slightly high by the scannable stacks and globals
//     (usually kilobytes). It reads no stop-the-world statistics (unlike
//     runtime.ReadMemStats) and forces no collection. While the memory limit, not
//     GOGC, sets the goal (the goal is within 5 % of the limit less the non-heap
//     memory the runtime has mapped, both from runtime/metrics), inverting the goal
//     would understate H and the control plane would walk GOGC down one report at a
//     time; the allocated objects are reported instead (≥ H, and equal to it right
//     after a GC), so the next GOGC puts the goal under the limit and the estimate is
//     exact again (one correction instead of many). With GOGC off the allocated
//     objects are reported too (an upper bound). GOGC here is the value the agent
//     last applied or read back, so sampling never touches the runtime's settings.
//
// HeapSource tells which of the two a binary uses.
package tuning
