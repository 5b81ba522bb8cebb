package tuning

import (
	"math"
	"runtime/metrics"
)

// runtime/metrics names used to measure the live heap (see the package doc).
const (
	// Go ≥ 1.21: the heap marked live by the last GC.
	metricLiveHeap = "/gc/heap/live:bytes"
	// Go ≥ 1.16: the heap size at which the next GC starts.
	metricHeapGoal = "/gc/heap/goal:bytes"
	// Go ≥ 1.16: bytes of allocated heap objects (live + not yet swept garbage).
	metricHeapObjects = "/memory/classes/heap/objects:bytes"
	// Go ≥ 1.16: what the limit-governed goal is computed from (see estimateLiveHeap).
	metricMemoryTotal  = "/memory/classes/total:bytes"
	metricHeapReleased = "/memory/classes/heap/released:bytes"
	metricHeapFree     = "/memory/classes/heap/free:bytes"
)

// haveLiveHeapMetric: decided by what the running runtime offers, not by parsing
// runtime.Version(), so a development build or a backport behaves correctly.
var haveLiveHeapMetric = metricSupported(metricLiveHeap)

func metricSupported(name string) bool {
	for _, description := range metrics.All() {
		if description.Name == name {
			return true
		}
	}
	return false
}

// HeapSource names how this binary measures the live heap: the runtime/metrics name
// on Go ≥ 1.21, or a description of the estimate used on Go 1.19/1.20.
func HeapSource() string {
	if haveLiveHeapMetric {
		return metricLiveHeap
	}
	return "estimate: " + metricHeapGoal + " × 100/(100+GOGC), capped by " + metricHeapObjects +
		" (which is used alone while GOMEMLIMIT sets the goal)"
}

// readLiveHeap returns the live heap in bytes. gcPercent is the GOGC currently in
// force (used by the Go < 1.21 estimate only).
func readLiveHeap(gcPercent int) uint64 {
	if haveLiveHeapMetric {
		sample := []metrics.Sample{{Name: metricLiveHeap}}
		metrics.Read(sample)
		if sample[0].Value.Kind() == metrics.KindUint64 {
			return sample[0].Value.Uint64()
		}
	}
	samples := []metrics.Sample{
		{Name: metricHeapGoal},
		{Name: metricHeapObjects},
		{Name: metricMemoryTotal},
		{Name: metricHeapReleased},
		{Name: metricHeapFree},
	}
	metrics.Read(samples)
	return estimateLiveHeap(heapFigures{
		goal:     uint64Value(samples[0]),
		objects:  uint64Value(samples[1]),
		total:    uint64Value(samples[2]),
		released: uint64Value(samples[3]),
		free:     uint64Value(samples[4]),
	}, gcPercent, readMemoryLimit())
}

func uint64Value(sample metrics.Sample) uint64 {
	if sample.Value.Kind() == metrics.KindUint64 {
		return sample.Value.Uint64()
	}
	return 0
}

// heapFigures are the runtime/metrics values the Go < 1.21 estimate uses.
type heapFigures struct {
	goal     uint64 // /gc/heap/goal:bytes
	objects  uint64 // /memory/classes/heap/objects:bytes
	total    uint64 // /memory/classes/total:bytes
	released uint64 // /memory/classes/heap/released:bytes
	free     uint64 // /memory/classes/heap/free:bytes
}

// estimateLiveHeap inverts the pacer's goal = H × (1 + GOGC/100) (ignoring the small
// stack/globals term) and caps the result by the allocated objects, which always
// include the live heap. With GOGC off (negative) or no goal yet, the allocated
// objects are the only figure there is.
//
// When the memory limit, not GOGC, sets the goal, inverting it would understate H
// (the goal is lower than H × (1 + GOGC/100)): the control plane would answer with a
// GOGC only a little lower, whose goal is still the limit's, and the two would walk
// towards the right value one report at a time. The runtime sets that goal to about
// limit − (memory mapped and in use other than heap objects), less a small headroom
// (1 MiB in Go 1.19, 3 % in 1.20); a goal within 5 % of that figure means the limit
// governs, and the allocated objects (≥ H, equal to it right after a GC) are reported
// instead: the control plane then answers with a GOGC whose goal is below the limit,
// and the next estimate is exact again. With the ADR's default ratios (target 0.8,
// GOMEMLIMIT 0.9 of the container limit) the steady-state goal stays outside that
// 5 % band, so the two figures do not take turns.
func estimateLiveHeap(f heapFigures, gcPercent int, memoryLimit int64) uint64 {
	if gcPercent < 0 || f.goal == 0 {
		return f.objects
	}
	if memoryLimit > 0 && memoryLimit < math.MaxInt64 {
		mappedInUse := f.total - f.released - f.free // runtime's mappedReady − heapFree
		if f.released+f.free > f.total {
			mappedInUse = 0
		}
		nonHeap := uint64(0)
		if mappedInUse > f.objects {
			nonHeap = mappedInUse - f.objects
		}
		if room := uint64(memoryLimit); nonHeap < room {
			room -= nonHeap
			if f.goal >= room-room/20 {
				return f.objects
			}
		} else {
			return f.objects // over the limit already: the limit governs
		}
	}
	estimate := uint64(float64(f.goal) * 100 / float64(100+gcPercent))
	if f.objects > 0 && estimate > f.objects {
		estimate = f.objects
	}
	return estimate
}
