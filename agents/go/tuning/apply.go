package tuning

import (
	"fmt"
	"runtime/debug"
)

// readMemoryLimit returns the memory limit in force; a negative argument only reads.
func readMemoryLimit() int64 {
	return debug.SetMemoryLimit(-1)
}

// readGCPercent returns the GOGC in force. There is no getter, only the setter that
// returns the previous value, so this sets expected and puts the previous value back
// when it differed: when expected is right (the usual case, it is what the agent
// applied) the setting never changes, not even for an instant.
func readGCPercent(expected int) int {
	previous := debug.SetGCPercent(expected)
	if previous != expected {
		debug.SetGCPercent(previous)
	}
	return previous
}

// startingGCPercent reads GOGC at start the documented way: swap in 100 (the default,
// so for most processes nothing changes) and put the old value back.
func startingGCPercent() int {
	old := debug.SetGCPercent(100)
	debug.SetGCPercent(old)
	return old
}

// apply sets GOMEMLIMIT and GOGC from a settings document and reads both back. It
// must be called with a.applyMu held (one application at a time).
func (a *Agent) apply(settings Settings) Applied {
	applied := Applied{
		Version:          settings.Version,
		Policy:           settings.Policy,
		Reason:           settings.Reason,
		HeapNearLimit:    settings.HeapNearLimit,
		MemoryLimitBytes: settings.MemoryLimitBytes,
		GCPercent:        settings.GCPercent,
	}

	switch limit := settings.MemoryLimitBytes; {
	case limit == nil:
		debug.SetMemoryLimit(a.startMemoryLimit)
	case *limit <= 0:
		// 0 would make the GC run continuously; negative values only read.
		applied.Refused = append(applied.Refused, fmt.Sprintf(
			"memoryLimitBytes %d refused (must be > 0); keeping %d",
			*limit, readMemoryLimit()))
	default:
		debug.SetMemoryLimit(*limit)
	}

	a.mu.Lock()
	expectedGC := a.gcPercent
	a.mu.Unlock()
	switch percent := settings.GCPercent; {
	case percent == nil:
		debug.SetGCPercent(a.startGCPercent)
		expectedGC = a.startGCPercent
	case *percent < 0:
		// GOGC=off: with no memory limit the heap would grow without bound, and the
		// control plane never sends it (ADR 0007).
		applied.Refused = append(applied.Refused, fmt.Sprintf(
			"gcPercent %d refused (GOGC off is never applied); keeping %d",
			*percent, readGCPercent(expectedGC)))
	default:
		debug.SetGCPercent(*percent)
		expectedGC = *percent
	}

	applied.ReadbackMemoryLimit = readMemoryLimit()
	applied.ReadbackGCPercent = readGCPercent(expectedGC)

	a.mu.Lock()
	a.gcPercent = applied.ReadbackGCPercent
	applied.LiveHeapBytes = a.lastReported
	a.mu.Unlock()
	return applied
}
