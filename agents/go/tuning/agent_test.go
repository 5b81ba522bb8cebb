package tuning

import (
	"encoding/json"
	"net/http"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestNewChecksTheConfiguration(t *testing.T) {
	valid := Config{ControlPlane: "http://cp:8080/", NodeID: "n", Namespace: "ns", Workload: "w"}
	if _, err := New(valid); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	cases := map[string]func(*Config){
		"no scheme":         func(c *Config) { c.ControlPlane = "cp:8080" },
		"not http":          func(c *Config) { c.ControlPlane = "ftp://cp" },
		"empty":             func(c *Config) { c.ControlPlane = "" },
		"no node id":        func(c *Config) { c.NodeID = "" },
		"blank namespace":   func(c *Config) { c.Namespace = "  " },
		"no workload":       func(c *Config) { c.Workload = "" },
		"negative interval": func(c *Config) { c.ReportInterval = -time.Second },
		"negative limit":    func(c *Config) { c.MemoryLimitOverride = -1 },
	}
	for name, breakIt := range cases {
		cfg := valid
		breakIt(&cfg)
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	agent, _ := New(valid)
	if agent.cfg.ReportInterval != DefaultReportInterval || agent.cfg.PollWait != DefaultPollWait {
		t.Errorf("defaults not applied: %v %v", agent.cfg.ReportInterval, agent.cfg.PollWait)
	}
	if agent.base != "http://cp:8080" {
		t.Errorf("trailing slash kept: %q", agent.base)
	}
}

func TestReportBodyHasTheADRShape(t *testing.T) {
	cp := newFakeControlPlane(t)
	rec := newRecorder()
	cfg := testConfig(cp)
	rec.hook(&cfg)
	startAgent(t, cfg, nil)
	rec.nextApplied(t, 2*time.Second) // the first report's reply

	got := cp.lastReport()
	if got.contentType != "application/json" {
		t.Errorf("Content-Type %q", got.contentType)
	}
	var keys []string
	for key := range got.fields {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	want := "agent container labels liveHeapBytes memoryLimitBytes namespace nodeId pod workload"
	if strings.Join(keys, " ") != want {
		t.Errorf("report keys\n got %v\nwant %v", keys, want)
	}
	r := got.report
	if r.NodeID != "orders-7d9f.shop" || r.Namespace != "shop" || r.Workload != "orders" ||
		r.Pod != "orders-7d9f" || r.Container != "app" {
		t.Errorf("identity fields: %+v", r)
	}
	if len(r.Labels) != 2 || r.Labels["app"] != "orders" || r.Labels["version"] != "v2" {
		t.Errorf("labels: %v", r.Labels)
	}
	if r.MemoryLimitBytes != 512<<20 {
		t.Errorf("memoryLimitBytes %d, want the override %d", r.MemoryLimitBytes, 512<<20)
	}
	if r.LiveHeapBytes == 0 {
		t.Errorf("liveHeapBytes is 0: a running Go program always has a live heap")
	}
	if !strings.HasPrefix(r.Agent, "meshward-go-agent/"+Version+" go") {
		t.Errorf("agent %q", r.Agent)
	}
	// Numbers are JSON numbers and labels an object (not strings/arrays).
	var probe struct {
		MemoryLimitBytes json.Number       `json:"memoryLimitBytes"`
		LiveHeapBytes    json.Number       `json:"liveHeapBytes"`
		Labels           map[string]string `json:"labels"`
	}
	raw, _ := json.Marshal(got.fields)
	if err := json.Unmarshal(raw, &probe); err != nil {
		t.Errorf("field types: %v", err)
	}
}

func TestReportWithoutLabelsSendsAnEmptyObject(t *testing.T) {
	cp := newFakeControlPlane(t)
	rec := newRecorder()
	cfg := testConfig(cp)
	cfg.Labels = nil
	cfg.MemoryLimitOverride = 0
	cfg.CgroupRoot = t.TempDir() // no cgroup files: no limit
	rec.hook(&cfg)
	startAgent(t, cfg, nil)
	rec.nextApplied(t, 2*time.Second)
	got := cp.lastReport()
	if string(got.fields["labels"]) != "{}" {
		t.Errorf("labels %s, want {}", got.fields["labels"])
	}
	if string(got.fields["memoryLimitBytes"]) != "0" {
		t.Errorf("memoryLimitBytes %s, want 0 (none)", got.fields["memoryLimitBytes"])
	}
}

func TestLongPollSendsTheVersionAndAppliesEachNewOne(t *testing.T) {
	cp := newFakeControlPlane(t)
	cp.docFor = func(node string) Settings {
		return Settings{NodeID: node, Version: "v1", MemoryLimitBytes: int64p(7 << 30), GCPercent: intp(150)}
	}
	rec := newRecorder()
	cfg := testConfig(cp)
	rec.hook(&cfg)
	startAgent(t, cfg, nil)

	first := rec.nextApplied(t, 2*time.Second)
	if first.Version != "v1" || first.ReadbackGCPercent != 150 || first.ReadbackMemoryLimit != 7<<30 {
		t.Fatalf("first apply: %+v", first)
	}
	waitFor(t, 2*time.Second, "a poll with If-None-Match \"v1\"", func() bool {
		for _, get := range cp.getRequests() {
			if get.ifNoneMatch == `"v1"` {
				return true
			}
		}
		return false
	})
	rec.noApplied(t, 100*time.Millisecond) // held, not re-applied

	cp.set(Settings{NodeID: cfg.NodeID, Version: "v2", MemoryLimitBytes: int64p(6 << 30), GCPercent: intp(250),
		HeapNearLimit: true, Policy: "shop/orders-gc", Reason: "fixed"})
	second := rec.nextApplied(t, time.Second)
	if second.Version != "v2" || *second.GCPercent != 250 || second.ReadbackGCPercent != 250 ||
		second.ReadbackMemoryLimit != 6<<30 || !second.HeapNearLimit || second.Policy != "shop/orders-gc" {
		t.Fatalf("second apply: %+v", second)
	}
	waitFor(t, 2*time.Second, "a poll with If-None-Match \"v2\"", func() bool {
		gets := cp.getRequests()
		return gets[len(gets)-1].ifNoneMatch == `"v2"`
	})
	for _, get := range cp.getRequests() {
		if get.wait != "2s" {
			t.Errorf("wait=%q, want 2s", get.wait)
		}
	}
	select {
	case err := <-rec.errors:
		t.Errorf("unexpected error: %v", err)
	default:
	}
}

func TestNotModifiedKeepsPollingWithoutReapplying(t *testing.T) {
	cp := newFakeControlPlane(t)
	rec := newRecorder()
	cfg := testConfig(cp)
	cfg.PollWait = 200 * time.Millisecond
	rec.hook(&cfg)
	startAgent(t, cfg, nil)
	rec.nextApplied(t, 2*time.Second)

	count304 := func() int {
		n := 0
		for _, get := range cp.getRequests() {
			if get.ifNoneMatch == `"v1"` {
				n++
			}
		}
		return n
	}
	waitFor(t, 3*time.Second, "three polls answered 304", func() bool { return count304() >= 3 })
	if n := count304(); n > 6 {
		t.Errorf("%d polls in ~600ms of 200ms waits: not waiting", n)
	}
	rec.noApplied(t, 50*time.Millisecond)
	if got := cp.getRequests()[0].wait; got != "200ms" {
		t.Errorf("wait=%q, want 200ms", got)
	}

	cp.set(Settings{NodeID: cfg.NodeID, Version: "v2", GCPercent: intp(120)})
	if a := rec.nextApplied(t, time.Second); a.Version != "v2" || a.ReadbackGCPercent != 120 {
		t.Fatalf("apply after 304s: %+v", a)
	}
	select {
	case err := <-rec.errors:
		t.Errorf("304 produced an error: %v", err)
	default:
	}
}

func TestNotFoundMakesTheAgentReportAgain(t *testing.T) {
	cp := newFakeControlPlane(t)
	cp.docFor = func(node string) Settings { return Settings{NodeID: node, Version: "v1", GCPercent: intp(140)} }
	rec := newRecorder()
	cfg := testConfig(cp)
	rec.hook(&cfg)
	startAgent(t, cfg, nil)
	rec.nextApplied(t, 2*time.Second)
	reportsBefore := cp.reportCount()

	// The control plane restarts: it knows no node and computes a new document.
	cp.forget(func(node string) Settings {
		return Settings{NodeID: node, Version: "v-after-restart", GCPercent: intp(180)}
	})
	a := rec.nextApplied(t, 2*time.Second)
	if a.Version != "v-after-restart" || a.ReadbackGCPercent != 180 {
		t.Fatalf("after restart: %+v", a)
	}
	if cp.reportCount() != reportsBefore+1 {
		t.Errorf("reports: %d before, %d after; want exactly one re-report", reportsBefore, cp.reportCount())
	}
}

func TestAfterARestartAnIdenticalDocumentIsNotReapplied(t *testing.T) {
	cp := newFakeControlPlane(t)
	doc := func(node string) Settings { return Settings{NodeID: node, Version: "same", GCPercent: intp(160)} }
	cp.docFor = doc
	rec := newRecorder()
	cfg := testConfig(cp)
	rec.hook(&cfg)
	startAgent(t, cfg, nil)
	rec.nextApplied(t, 2*time.Second)
	reportsBefore := cp.reportCount()

	cp.forget(doc) // restart; the recomputed document has the version in force
	waitFor(t, 2*time.Second, "the re-report", func() bool { return cp.reportCount() > reportsBefore })
	rec.noApplied(t, 200*time.Millisecond)
	waitFor(t, 2*time.Second, `a poll with If-None-Match "same" after the restart`, func() bool {
		gets := cp.getRequests()
		return gets[len(gets)-1].ifNoneMatch == `"same"`
	})

	cp.set(Settings{NodeID: cfg.NodeID, Version: "edited", GCPercent: intp(200)})
	if a := rec.nextApplied(t, time.Second); a.Version != "edited" || a.ReadbackGCPercent != 200 {
		t.Fatalf("edit after the restart: %+v", a)
	}
}

func TestMalformedSettingsAreAnErrorAndBackOff(t *testing.T) {
	cp := newFakeControlPlane(t)
	cp.getOverride = func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"nodeId": "orders-7d9f.shop", "version": 3`)) // truncated
	}
	rec := newRecorder()
	cfg := testConfig(cp)
	rec.hook(&cfg)
	startAgent(t, cfg, nil)
	rec.nextApplied(t, 2*time.Second) // from the report reply

	err := rec.nextError(t, 2*time.Second)
	if !strings.Contains(err.Error(), "settings from") {
		t.Errorf("error does not say where: %v", err)
	}
	time.Sleep(1200 * time.Millisecond)
	// Backoff 200, 400, 800 ms (minus jitter): about 4 requests in 1.2 s, not hundreds.
	if n := len(cp.getRequests()); n < 2 || n > 7 {
		t.Errorf("%d polls in ~1.2s against a broken server, want 2..7 (bounded backoff)", n)
	}
}

func TestWrongTypesAndForeignDocumentsAreRefused(t *testing.T) {
	agent, err := New(Config{ControlPlane: "http://cp", NodeID: "me", Namespace: "ns", Workload: "w"})
	if err != nil {
		t.Fatal(err)
	}
	bad := map[string]string{
		"gcPercent a string": `{"version":"v","gcPercent":"150"}`,
		"fractional":         `{"version":"v","gcPercent":1.5}`,
		"huge limit":         `{"version":"v","memoryLimitBytes":1e30}`,
		"no version":         `{"gcPercent":150}`,
		"other node":         `{"nodeId":"you","version":"v"}`,
		"not an object":      `[1,2]`,
		"empty":              ``,
	}
	for name, body := range bad {
		if _, err := agent.decodeSettings([]byte(body), ""); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	s, err := agent.decodeSettings([]byte(`{"memoryLimitBytes":null,"unknownField":1}`), `W/"from-etag"`)
	if err != nil || s.Version != "from-etag" || s.MemoryLimitBytes != nil {
		t.Errorf("version from ETag / null / unknown field: %+v %v", s, err)
	}
}

func TestServerIgnoringIfNoneMatchDoesNotSpin(t *testing.T) {
	cp := newFakeControlPlane(t)
	cp.getOverride = func(w http.ResponseWriter, r *http.Request) {
		writeDoc(w, Settings{NodeID: "orders-7d9f.shop", Version: "v1"})
	}
	rec := newRecorder()
	cfg := testConfig(cp)
	rec.hook(&cfg)
	startAgent(t, cfg, nil)
	rec.nextApplied(t, 2*time.Second)
	time.Sleep(time.Second)
	if n := len(cp.getRequests()); n > 6 {
		t.Errorf("%d polls in 1s against a server that ignores If-None-Match", n)
	}
	if err := rec.nextError(t, time.Second); !strings.Contains(err.Error(), "If-None-Match") {
		t.Errorf("error: %v", err)
	}
}

func TestEarlyNotModifiedDoesNotSpin(t *testing.T) {
	cp := newFakeControlPlane(t)
	cp.getOverride = func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNotModified) // at once, ignoring wait
	}
	rec := newRecorder()
	cfg := testConfig(cp)
	rec.hook(&cfg)
	startAgent(t, cfg, nil)
	time.Sleep(time.Second)
	if n := len(cp.getRequests()); n > 6 {
		t.Errorf("%d polls in 1s against a server answering 304 at once", n)
	}
}

func TestPersistentNotFoundBacksOff(t *testing.T) {
	cp := newFakeControlPlane(t)
	cp.getOverride = func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "unknown node", http.StatusNotFound)
	}
	rec := newRecorder()
	cfg := testConfig(cp)
	rec.hook(&cfg)
	startAgent(t, cfg, nil)
	time.Sleep(time.Second)
	if n := cp.reportCount(); n > 8 {
		t.Errorf("%d reports in 1s while GET stays 404: not backing off", n)
	}
	if err := rec.nextError(t, time.Second); !strings.Contains(err.Error(), "404") {
		t.Errorf("error: %v", err)
	}
}

func TestEveryRequestHasATimeout(t *testing.T) {
	cp := newFakeControlPlane(t)
	cp.getOverride = func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // never answers
	}
	rec := newRecorder()
	cfg := testConfig(cp)
	cfg.PollWait = 100 * time.Millisecond
	rec.hook(&cfg)
	started := time.Now()
	startAgent(t, cfg, func(a *Agent) { a.margin = 100 * time.Millisecond })
	err := rec.nextError(t, 2*time.Second)
	if took := time.Since(started); took > time.Second {
		t.Errorf("hung poll noticed after %v, want ≈ wait+margin = 200ms", took)
	}
	if !strings.Contains(err.Error(), "deadline") && !strings.Contains(err.Error(), "Timeout") {
		t.Errorf("error does not say it timed out: %v", err)
	}
}

func TestErrorStatusIsReportedWithTheBody(t *testing.T) {
	cp := newFakeControlPlane(t)
	cp.reportOverride = func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "workload: must not be empty", http.StatusBadRequest)
	}
	rec := newRecorder()
	cfg := testConfig(cp)
	rec.hook(&cfg)
	startAgent(t, cfg, nil)
	err := rec.nextError(t, 2*time.Second)
	if !strings.Contains(err.Error(), "400") || !strings.Contains(err.Error(), "workload: must not be empty") {
		t.Errorf("error: %v", err)
	}
}

func TestHeapMoveOfMoreThanTenPercentIsReportedEarly(t *testing.T) {
	cp := newFakeControlPlane(t)
	rec := newRecorder()
	cfg := testConfig(cp)
	rec.hook(&cfg)
	var heap uint64 = 100 << 20
	startAgent(t, cfg, func(a *Agent) {
		a.liveHeap = func() uint64 { return atomic.LoadUint64(&heap) }
	})
	first := <-rec.reports
	if first.LiveHeapBytes != 100<<20 {
		t.Fatalf("first report %d", first.LiveHeapBytes)
	}

	atomic.StoreUint64(&heap, 105<<20) // +5 %: below the threshold
	select {
	case r := <-rec.reports:
		t.Fatalf("reported a 5%% move: %d", r.LiveHeapBytes)
	case <-time.After(300 * time.Millisecond):
	}

	atomic.StoreUint64(&heap, 85<<20) // −15 % from the last report
	select {
	case r := <-rec.reports:
		if r.LiveHeapBytes != 85<<20 {
			t.Errorf("reported %d, want %d", r.LiveHeapBytes, 85<<20)
		}
	case <-time.After(time.Second):
		t.Fatal("a 15% move was not reported within 1s (interval is 1 min)")
	}
	if a := rec.nextApplied(t, time.Second); a.LiveHeapBytes != 100<<20 {
		t.Errorf("applied carries liveHeapBytes %d, want the reported %d", a.LiveHeapBytes, 100<<20)
	}
}

func TestReportsFollowTheInterval(t *testing.T) {
	cp := newFakeControlPlane(t)
	rec := newRecorder()
	cfg := testConfig(cp)
	cfg.ReportInterval = 150 * time.Millisecond
	rec.hook(&cfg)
	var heap uint64 = 1 << 20 // constant: only the interval triggers reports
	startAgent(t, cfg, func(a *Agent) {
		a.liveHeap = func() uint64 { return atomic.LoadUint64(&heap) }
	})
	<-rec.reports
	time.Sleep(700 * time.Millisecond)
	if n := cp.reportCount(); n < 3 || n > 7 {
		t.Errorf("%d reports in ~700ms at a 150ms interval, want 3..7", n)
	}
}

func TestReportNow(t *testing.T) {
	cp := newFakeControlPlane(t)
	rec := newRecorder()
	cfg := testConfig(cp) // 1 min interval: no scheduled report during the test
	rec.hook(&cfg)
	var heap uint64 = 1 << 20
	agent := startAgent(t, cfg, func(a *Agent) {
		a.liveHeap = func() uint64 { return atomic.LoadUint64(&heap) }
	})
	<-rec.reports
	select {
	case r := <-rec.reports:
		t.Fatalf("unexpected report %+v", r)
	case <-time.After(200 * time.Millisecond):
	}
	agent.ReportNow()
	select {
	case <-rec.reports:
	case <-time.After(time.Second):
		t.Fatal("ReportNow did not report within 1s")
	}
}

func TestFormatWait(t *testing.T) {
	for wait, want := range map[time.Duration]string{
		30 * time.Second:        "30s",
		time.Minute:             "60s",
		2 * time.Second:         "2s",
		200 * time.Millisecond:  "200ms",
		1500 * time.Millisecond: "1500ms",
		time.Microsecond:        "1ms",
	} {
		if got := formatWait(wait); got != want {
			t.Errorf("formatWait(%v) = %q, want %q", wait, got, want)
		}
	}
}

func TestHeapMoved(t *testing.T) {
	cases := []struct {
		last, now uint64
		want      bool
	}{
		{100, 110, false}, {100, 111, true}, {100, 90, false}, {100, 89, true},
		{0, 0, false}, {0, 1, true}, {1000, 1000, false},
	}
	for _, c := range cases {
		if got := heapMoved(c.last, c.now); got != c.want {
			t.Errorf("heapMoved(%d, %d) = %v", c.last, c.now, got)
		}
	}
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
