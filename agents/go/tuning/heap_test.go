package tuning

import (
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"testing"
)

func TestHeapSourceMatchesTheRuntime(t *testing.T) {
	has := false
	for _, d := range metrics.All() {
		if d.Name == "/gc/heap/live:bytes" {
			has = true
		}
	}
	source := HeapSource()
	if has && source != "/gc/heap/live:bytes" {
		t.Errorf("%s has /gc/heap/live:bytes but the agent uses %q", runtime.Version(), source)
	}
	if !has && !strings.HasPrefix(source, "estimate:") {
		t.Errorf("%s lacks /gc/heap/live:bytes but the agent says %q", runtime.Version(), source)
	}
	t.Logf("%s: %s", runtime.Version(), source)
}

func TestEstimateLiveHeap(t *testing.T) {
	const none = math.MaxInt64
	figures := func(goal, objects uint64) heapFigures {
		// 10 MiB of non-heap memory mapped, 5 MiB free, 20 MiB released.
		return heapFigures{goal: goal, objects: objects, total: objects + 35<<20, released: 20 << 20, free: 5 << 20}
	}
	cases := []struct {
		name      string
		f         heapFigures
		gcPercent int
		limit     int64
		want      uint64
	}{
		{"goal = 2H", figures(200<<20, 150<<20), 100, none, 100 << 20},
		{"goal = 2.5H", figures(250<<20, 200<<20), 150, none, 100 << 20},
		{"low GOGC", figures(110<<20, 300<<20), 10, none, 100 << 20},
		{"capped by objects", figures(400<<20, 60<<20), 100, none, 60 << 20},
		{"GOGC off", figures(400<<20, 90<<20), -1, none, 90 << 20},
		{"no goal yet", figures(0, 7<<20), 100, none, 7 << 20},
		{"GOGC 0", figures(100<<20, 100<<20), 0, none, 100 << 20},
		{"no objects figure", heapFigures{goal: 4 << 20}, 100, none, 2 << 20},
		// A 1 GiB limit leaves 1024 − 10 MiB for the heap: a goal far below is GOGC's.
		{"limit far", figures(600<<20, 250<<20), 500, 1 << 30, 100 << 20},
		// A goal at the limit's room (−1 MiB headroom, Go 1.19): the limit governs.
		{"limit governs", figures(1013<<20, 300<<20), 500, 1 << 30, 300 << 20},
		// Go 1.20's 3 % headroom still counts as governed.
		{"limit governs, 3% headroom", figures(982<<20, 280<<20), 500, 1 << 30, 280 << 20},
		// ADR steady state: goal = T = 0.8 L, limit 0.9 L: GOGC governs.
		{"target below limit", figures(819<<20, 500<<20), 300, 921 << 20, 204 << 20},
		// Non-heap memory alone exceeds the limit: the limit governs.
		{"over the limit", heapFigures{goal: 100 << 20, objects: 50 << 20, total: 1100 << 20}, 100, 1000 << 20, 50 << 20},
	}
	for _, c := range cases {
		got := estimateLiveHeap(c.f, c.gcPercent, c.limit)
		if diff := int64(got) - int64(c.want); diff > 1<<20 || diff < -(1<<20) {
			t.Errorf("%s: estimate %d, want %d (±1 MiB)", c.name, got, c.want)
		}
	}
}

var retained [][]byte

func TestLiveHeapFollowsReachableMemory(t *testing.T) {
	keepGCSettings(t)
	debug.SetGCPercent(100)
	runtime.GC()
	before := readLiveHeap(100)

	const grow = 64 << 20
	for i := 0; i < 64; i++ {
		retained = append(retained, make([]byte, 1<<20))
	}
	runtime.GC()
	grown := readLiveHeap(100)
	if grown < before+grow*9/10 || grown > before+grow*12/10 {
		t.Errorf("after retaining 64 MiB: %d → %d (Δ %d MiB), want Δ ≈ 64 MiB", before, grown, (int64(grown)-int64(before))>>20)
	}

	retained = nil
	runtime.GC()
	shrunk := readLiveHeap(100)
	if shrunk > before+grow/10 {
		t.Errorf("after dropping 64 MiB: %d, want ≈ %d", shrunk, before)
	}
	t.Logf("%s: live heap %d → %d → %d bytes", HeapSource(), before, grown, shrunk)
}
