package tuning

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeControlPlane serves the ADR 0007 HTTP API from memory: reports make a node
// known, GET long-polls with If-None-Match, 404 for unknown nodes.
type fakeControlPlane struct {
	t      *testing.T
	server *httptest.Server

	mu      sync.Mutex
	known   map[string]bool
	docs    map[string]Settings
	changed chan struct{} // closed and replaced on every change
	reports []rawReport
	gets    []getRequest
	// docFor computes the document a report produces for an unknown node (default:
	// version "v1", nothing set).
	docFor func(nodeID string) Settings
	// getOverride, when set, answers GETs instead of the normal logic.
	getOverride func(w http.ResponseWriter, r *http.Request)
	// reportOverride, when set, answers POSTs instead of the normal logic.
	reportOverride func(w http.ResponseWriter, r *http.Request)
}

type rawReport struct {
	contentType string
	fields      map[string]json.RawMessage
	report      Report
}

type getRequest struct {
	ifNoneMatch string
	wait        string
}

func newFakeControlPlane(t *testing.T) *fakeControlPlane {
	f := &fakeControlPlane{
		t:       t,
		known:   map[string]bool{},
		docs:    map[string]Settings{},
		changed: make(chan struct{}),
		docFor: func(nodeID string) Settings {
			return Settings{NodeID: nodeID, Version: "v1"}
		},
	}
	f.server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.server.Close)
	return f
}

func (f *fakeControlPlane) serve(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/tuning/v1/report":
		f.mu.Lock()
		override := f.reportOverride
		f.mu.Unlock()
		if override != nil {
			override(w, r)
			return
		}
		f.handleReport(w, r)
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/tuning/v1/settings/"):
		f.mu.Lock()
		f.gets = append(f.gets, getRequest{r.Header.Get("If-None-Match"), r.URL.Query().Get("wait")})
		override := f.getOverride
		f.mu.Unlock()
		if override != nil {
			override(w, r)
			return
		}
		f.handleGet(w, r, strings.TrimPrefix(r.URL.Path, "/tuning/v1/settings/"))
	default:
		http.Error(w, "no such endpoint", http.StatusNotFound)
	}
}

func (f *fakeControlPlane) handleReport(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var fields map[string]json.RawMessage
	var report Report
	if json.Unmarshal(body, &fields) != nil || json.Unmarshal(body, &report) != nil {
		http.Error(w, "body is not JSON", http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	f.reports = append(f.reports, rawReport{r.Header.Get("Content-Type"), fields, report})
	if !f.known[report.NodeID] {
		f.known[report.NodeID] = true
		f.docs[report.NodeID] = f.docFor(report.NodeID)
	}
	doc := f.docs[report.NodeID]
	f.mu.Unlock()
	writeDoc(w, doc)
}

func (f *fakeControlPlane) handleGet(w http.ResponseWriter, r *http.Request, nodeID string) {
	wait := 30 * time.Second
	if text := r.URL.Query().Get("wait"); text != "" {
		parsed, err := time.ParseDuration(text)
		if err != nil {
			http.Error(w, "bad wait", http.StatusBadRequest)
			return
		}
		wait = parsed
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		f.mu.Lock()
		known := f.known[nodeID]
		doc := f.docs[nodeID]
		changed := f.changed
		f.mu.Unlock()
		if !known {
			http.Error(w, "no report from this node: POST /tuning/v1/report first", http.StatusNotFound)
			return
		}
		if r.Header.Get("If-None-Match") != `"`+doc.Version+`"` {
			writeDoc(w, doc)
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			w.WriteHeader(http.StatusNotModified)
			return
		case <-r.Context().Done():
			return
		}
	}
}

func writeDoc(w http.ResponseWriter, doc Settings) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("ETag", `"`+doc.Version+`"`)
	_ = json.NewEncoder(w).Encode(doc)
}

// set replaces a node's document and wakes its pollers.
func (f *fakeControlPlane) set(doc Settings) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.docs[doc.NodeID] = doc
	close(f.changed)
	f.changed = make(chan struct{})
}

// forget drops every node, like a control plane restart, and wakes pollers (which
// then answer 404).
func (f *fakeControlPlane) forget(docFor func(string) Settings) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.known = map[string]bool{}
	f.docs = map[string]Settings{}
	f.docFor = docFor
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeControlPlane) reportCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.reports)
}

func (f *fakeControlPlane) lastReport() rawReport {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reports[len(f.reports)-1]
}

func (f *fakeControlPlane) getRequests() []getRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]getRequest(nil), f.gets...)
}

// recorder collects an agent's callbacks.
type recorder struct {
	applied chan Applied
	reports chan Report
	errors  chan error
}

func newRecorder() *recorder {
	return &recorder{
		applied: make(chan Applied, 100),
		reports: make(chan Report, 1000),
		errors:  make(chan error, 1000),
	}
}

func (r *recorder) hook(cfg *Config) {
	cfg.OnApply = func(a Applied) { r.applied <- a }
	cfg.OnReport = func(rep Report) { r.reports <- rep }
	cfg.OnError = func(err error) { r.errors <- err }
}

func (r *recorder) nextApplied(t *testing.T, within time.Duration) Applied {
	t.Helper()
	select { // a value already there wins over a zero timeout
	case a := <-r.applied:
		return a
	default:
	}
	select {
	case a := <-r.applied:
		return a
	case <-time.After(within):
		t.Fatalf("no settings applied within %v", within)
		return Applied{}
	}
}

func (r *recorder) nextError(t *testing.T, within time.Duration) error {
	t.Helper()
	select {
	case err := <-r.errors:
		return err
	default:
	}
	select {
	case err := <-r.errors:
		return err
	case <-time.After(within):
		t.Fatalf("no error reported within %v", within)
		return nil
	}
}

func (r *recorder) noApplied(t *testing.T, during time.Duration) {
	t.Helper()
	select {
	case a := <-r.applied:
		t.Fatalf("unexpected apply of %q", a.Version)
	case <-time.After(during):
	}
}

// keepGCSettings restores the test process's memory limit and GOGC after the test:
// applying is real, and must not leak into other tests.
func keepGCSettings(t *testing.T) {
	t.Helper()
	limit := debug.SetMemoryLimit(-1)
	percent := startingGCPercent()
	t.Cleanup(func() {
		debug.SetMemoryLimit(limit)
		debug.SetGCPercent(percent)
	})
}

// testConfig is a valid configuration against the fake.
func testConfig(f *fakeControlPlane) Config {
	return Config{
		ControlPlane:        f.server.URL,
		NodeID:              "orders-7d9f.shop",
		Namespace:           "shop",
		Workload:            "orders",
		Labels:              map[string]string{"app": "orders", "version": "v2"},
		Pod:                 "orders-7d9f",
		Container:           "app",
		ReportInterval:      time.Minute, // scheduled reports stay out of the way
		PollWait:            2 * time.Second,
		MemoryLimitOverride: 512 << 20,
	}
}

// startAgent runs an agent until the test ends (and waits for it to stop).
func startAgent(t *testing.T, cfg Config, tweak func(*Agent)) *Agent {
	t.Helper()
	keepGCSettings(t)
	agent, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	agent.margin = 500 * time.Millisecond
	agent.sampleEvery = 20 * time.Millisecond
	if tweak != nil {
		tweak(agent)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- agent.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != context.Canceled {
				t.Errorf("Run returned %v, want context.Canceled", err)
			}
		case <-time.After(3 * time.Second):
			t.Errorf("Run did not return within 3s of cancel")
		}
	})
	return agent
}

func int64p(v int64) *int64 { return &v }
func intp(v int) *int       { return &v }
