package tuning

import (
	"math"
	"runtime/debug"
	"strings"
	"testing"
)

// newApplyAgent returns an agent (not running) whose "starting" settings are
// startLimit / startGC, and a recorder of its callbacks.
func newApplyAgent(t *testing.T, startLimit int64, startGC int) (*Agent, *recorder) {
	t.Helper()
	keepGCSettings(t)
	debug.SetMemoryLimit(startLimit)
	debug.SetGCPercent(startGC)
	rec := newRecorder()
	cfg := Config{ControlPlane: "http://cp", NodeID: "n", Namespace: "ns", Workload: "w"}
	rec.hook(&cfg)
	agent, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return agent, rec
}

func TestNewRecordsTheStartingSettings(t *testing.T) {
	agent, _ := newApplyAgent(t, 3<<30, 77)
	limit, percent := agent.StartingSettings()
	if limit != 3<<30 || percent != 77 {
		t.Errorf("starting settings %d / %d, want %d / 77", limit, percent, int64(3<<30))
	}
	// Reading GOGC must not have changed it.
	if got := debug.SetGCPercent(77); got != 77 {
		t.Errorf("GOGC is %d after New, want 77", got)
	}
}

func TestApplySetsBothAndReadsThemBack(t *testing.T) {
	agent, rec := newApplyAgent(t, math.MaxInt64, 100)
	agent.applyIfNew(Settings{Version: "v1", MemoryLimitBytes: int64p(5 << 30), GCPercent: intp(175)})
	a := rec.nextApplied(t, 0)
	if a.ReadbackMemoryLimit != 5<<30 || a.ReadbackGCPercent != 175 || len(a.Refused) != 0 {
		t.Fatalf("applied %+v", a)
	}
	if *a.MemoryLimitBytes != 5<<30 || *a.GCPercent != 175 || a.Version != "v1" {
		t.Errorf("pushed values not passed on: %+v", a)
	}
	// The runtime really uses them.
	if got := debug.SetMemoryLimit(-1); got != 5<<30 {
		t.Errorf("runtime memory limit %d", got)
	}
	if got := debug.SetGCPercent(175); got != 175 {
		t.Errorf("runtime GOGC %d", got)
	}

	// The same version again is not re-applied.
	agent.applyIfNew(Settings{Version: "v1", GCPercent: intp(300)})
	select {
	case again := <-rec.applied:
		t.Fatalf("same version re-applied: %+v", again)
	default:
	}
}

func TestAbsentValuesRestoreTheStartingSettings(t *testing.T) {
	agent, rec := newApplyAgent(t, 6<<30, 120)
	agent.applyIfNew(Settings{Version: "v1", MemoryLimitBytes: int64p(2 << 30), GCPercent: intp(400)})
	rec.nextApplied(t, 0)

	agent.applyIfNew(Settings{Version: "v2"}) // the policy was removed
	a := rec.nextApplied(t, 0)
	if a.MemoryLimitBytes != nil || a.GCPercent != nil {
		t.Errorf("pushed values should be nil: %+v", a)
	}
	if a.ReadbackMemoryLimit != 6<<30 || a.ReadbackGCPercent != 120 {
		t.Errorf("restored %d / %d, want the starting %d / 120", a.ReadbackMemoryLimit, a.ReadbackGCPercent, int64(6<<30))
	}

	// Only one of them absent: that one is restored, the other applied.
	agent.applyIfNew(Settings{Version: "v3", GCPercent: intp(90)})
	a = rec.nextApplied(t, 0)
	if a.ReadbackMemoryLimit != 6<<30 || a.ReadbackGCPercent != 90 {
		t.Errorf("v3: %d / %d", a.ReadbackMemoryLimit, a.ReadbackGCPercent)
	}
}

func TestStartingGOGCOffIsRestoredButNeverPushed(t *testing.T) {
	agent, rec := newApplyAgent(t, 8<<30, -1) // the process started with GOGC=off
	agent.applyIfNew(Settings{Version: "v1", GCPercent: intp(150)})
	if a := rec.nextApplied(t, 0); a.ReadbackGCPercent != 150 {
		t.Fatalf("v1: %+v", a)
	}
	agent.applyIfNew(Settings{Version: "v2"})
	if a := rec.nextApplied(t, 0); a.ReadbackGCPercent != -1 {
		t.Errorf("the process's own GOGC=off was not restored: %+v", a)
	}
}

func TestNegativeGCPercentIsRefused(t *testing.T) {
	agent, rec := newApplyAgent(t, math.MaxInt64, 100)
	agent.applyIfNew(Settings{Version: "v1", GCPercent: intp(150)})
	rec.nextApplied(t, 0)

	agent.applyIfNew(Settings{Version: "v2", GCPercent: intp(-1), MemoryLimitBytes: int64p(3 << 30)})
	a := rec.nextApplied(t, 0)
	if a.ReadbackGCPercent != 150 {
		t.Errorf("GOGC %d after a refused -1, want the previous 150", a.ReadbackGCPercent)
	}
	if got := debug.SetGCPercent(150); got != 150 {
		t.Errorf("runtime GOGC %d", got)
	}
	if a.ReadbackMemoryLimit != 3<<30 {
		t.Errorf("the memory limit of the same document was not applied: %d", a.ReadbackMemoryLimit)
	}
	if len(a.Refused) != 1 || !strings.Contains(a.Refused[0], "gcPercent -1 refused") {
		t.Errorf("Refused %v", a.Refused)
	}
	if err := rec.nextError(t, 0); !strings.Contains(err.Error(), "v2") || !strings.Contains(err.Error(), "refused") {
		t.Errorf("error %v", err)
	}
}

func TestNonPositiveMemoryLimitIsRefused(t *testing.T) {
	agent, rec := newApplyAgent(t, math.MaxInt64, 100)
	agent.applyIfNew(Settings{Version: "v1", MemoryLimitBytes: int64p(4 << 30)})
	rec.nextApplied(t, 0)
	for i, bad := range []int64{0, -5} {
		agent.applyIfNew(Settings{Version: "bad" + string(rune('a'+i)), MemoryLimitBytes: int64p(bad), GCPercent: intp(110)})
		a := rec.nextApplied(t, 0)
		if a.ReadbackMemoryLimit != 4<<30 || a.ReadbackGCPercent != 110 || len(a.Refused) != 1 {
			t.Errorf("memoryLimitBytes %d: %+v", bad, a)
		}
	}
}

func TestReadGCPercentDoesNotChangeIt(t *testing.T) {
	keepGCSettings(t)
	debug.SetGCPercent(130)
	if got := readGCPercent(130); got != 130 {
		t.Errorf("readGCPercent(right guess) = %d", got)
	}
	if got := readGCPercent(50); got != 130 {
		t.Errorf("readGCPercent(wrong guess) = %d", got)
	}
	if got := debug.SetGCPercent(130); got != 130 {
		t.Errorf("GOGC changed to %d by reading", got)
	}
}
