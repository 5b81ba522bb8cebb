package main

import (
	"bufio"
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

// settingsServer is a minimal ADR 0007 control plane: one document for every node,
// long-polled with If-None-Match.
type settingsServer struct {
	mu      sync.Mutex
	doc     map[string]interface{}
	changed chan struct{}
	known   bool
}

func newSettingsServer(t *testing.T, doc map[string]interface{}) (*httptest.Server, *settingsServer) {
	s := &settingsServer{doc: doc, changed: make(chan struct{})}
	server := httptest.NewServer(s)
	t.Cleanup(server.Close)
	return server, s
}

func (s *settingsServer) set(doc map[string]interface{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.doc = doc
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *settingsServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost && r.URL.Path == "/tuning/v1/report" {
		_, _ = io.Copy(io.Discard, r.Body)
		s.mu.Lock()
		s.known = true
		doc := s.doc
		s.mu.Unlock()
		_ = json.NewEncoder(w).Encode(doc)
		return
	}
	wait, _ := time.ParseDuration(r.URL.Query().Get("wait"))
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		s.mu.Lock()
		doc, known, changed := s.doc, s.known, s.changed
		s.mu.Unlock()
		if !known {
			http.Error(w, "report first", http.StatusNotFound)
			return
		}
		if r.Header.Get("If-None-Match") != `"`+doc["version"].(string)+`"` {
			_ = json.NewEncoder(w).Encode(doc)
			return
		}
		select {
		case <-changed:
		case <-timer.C:
			w.WriteHeader(http.StatusNotModified)
			return
		case <-r.Context().Done():
			return
		}
	}
}

// probe runs the program in-process with piped stdin/stdout.
type probe struct {
	t      *testing.T
	stdin  *io.PipeWriter
	events chan map[string]interface{}
	exit   chan int
}

func startProbe(t *testing.T, args ...string) *probe {
	t.Helper()
	limit, percent := debug.SetMemoryLimit(-1), debug.SetGCPercent(100)
	debug.SetGCPercent(percent)
	t.Cleanup(func() { debug.SetMemoryLimit(limit); debug.SetGCPercent(percent) })

	stdinR, stdinW := io.Pipe()
	stdoutR, stdoutW := io.Pipe()
	p := &probe{t: t, stdin: stdinW, events: make(chan map[string]interface{}, 1000), exit: make(chan int, 1)}
	go func() {
		code := run(args, stdinR, stdoutW, io.Discard)
		stdoutW.Close()
		p.exit <- code
	}()
	go func() {
		lines := bufio.NewScanner(stdoutR)
		for lines.Scan() {
			var event map[string]interface{}
			if err := json.Unmarshal(lines.Bytes(), &event); err != nil {
				t.Errorf("stdout line is not a JSON object: %q", lines.Text())
				continue
			}
			p.events <- event
		}
		close(p.events)
	}()
	t.Cleanup(func() {
		stdinW.Close()
		select {
		case <-p.exit:
		case <-time.After(3 * time.Second):
			t.Error("probe did not exit after stdin closed")
		}
	})
	return p
}

func (p *probe) send(line string) {
	if _, err := io.WriteString(p.stdin, line+"\n"); err != nil {
		p.t.Fatal(err)
	}
}

// await returns the first event of that kind for which match holds (skipping others).
func (p *probe) await(kind string, match func(map[string]interface{}) bool) map[string]interface{} {
	p.t.Helper()
	deadline := time.After(3 * time.Second)
	for {
		select {
		case event, ok := <-p.events:
			if !ok {
				p.t.Fatalf("stdout closed while waiting for %q", kind)
			}
			if event["event"] == kind && (match == nil || match(event)) {
				return event
			}
		case <-deadline:
			p.t.Fatalf("no matching %q event within 3s", kind)
		}
	}
}

func number(event map[string]interface{}, key string) float64 {
	value, _ := event[key].(float64)
	return value
}

func TestProbeContract(t *testing.T) {
	server, settings := newSettingsServer(t, map[string]interface{}{
		"nodeId": "probe-1.shop", "version": "v1", "memoryLimitBytes": 6 << 30,
	})
	p := startProbe(t, "--control-plane", server.URL, "--node-id", "probe-1.shop",
		"--namespace", "shop", "--workload", "probe", "--labels", "app=probe,tier=backend",
		"--memory-limit-bytes", "1073741824", "--report-interval", "200ms", "--poll-wait", "2s")

	started := p.await("started", nil)
	if started["nodeId"] != "probe-1.shop" {
		t.Errorf("started: %v", started)
	}
	first := p.await("reported", nil)
	applied := p.await("applied", nil)
	if applied["version"] != "v1" || number(applied, "memoryLimitBytes") != 6<<30 ||
		number(applied, "readbackMemoryLimit") != 6<<30 {
		t.Errorf("applied v1: %v", applied)
	}
	if value, present := applied["gcPercent"]; !present || value != nil {
		t.Errorf("gcPercent not pushed must be null, got %v (present %v)", value, present)
	}
	if number(applied, "readbackGCPercent") != 100 {
		t.Errorf("readbackGCPercent %v, want the starting 100", applied["readbackGCPercent"])
	}
	if number(applied, "liveHeapBytes") != number(first, "liveHeapBytes") {
		t.Errorf("applied liveHeapBytes %v, last reported %v", applied["liveHeapBytes"], first["liveHeapBytes"])
	}

	base := number(first, "liveHeapBytes")
	p.send("grow 48")
	grown := p.await("reported", func(e map[string]interface{}) bool {
		return number(e, "liveHeapBytes") >= base+40<<20
	})
	p.send("shrink")
	p.await("reported", func(e map[string]interface{}) bool {
		return number(e, "liveHeapBytes") < number(grown, "liveHeapBytes")-32<<20
	})

	p.send("jump 3")
	if e := p.await("error", nil); !strings.Contains(e["message"].(string), "unknown command") {
		t.Errorf("error event: %v", e)
	}
	p.send("grow lots")
	p.await("error", nil)

	settings.set(map[string]interface{}{
		"nodeId": "probe-1.shop", "version": "v2", "gcPercent": 200,
	})
	applied = p.await("applied", func(e map[string]interface{}) bool { return e["version"] == "v2" })
	if number(applied, "gcPercent") != 200 || number(applied, "readbackGCPercent") != 200 || applied["memoryLimitBytes"] != nil {
		t.Errorf("applied v2: %v", applied)
	}

	p.send("quit")
	select {
	case code := <-p.exit:
		p.exit <- code
		if code != 0 {
			t.Errorf("quit: exit %d", code)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("quit did not exit")
	}
}

func TestProbeEndOfInputIsQuit(t *testing.T) {
	server, _ := newSettingsServer(t, map[string]interface{}{"nodeId": "n", "version": "v1"})
	p := startProbe(t, "--control-plane", server.URL, "--node-id", "n", "--namespace", "ns", "--workload", "w")
	p.await("started", nil)
	p.stdin.Close()
	select {
	case code := <-p.exit:
		p.exit <- code
		if code != 0 {
			t.Errorf("EOF: exit %d", code)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("EOF did not exit")
	}
}

func TestProbeRefusesBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"--control-plane", "http://x", "--node-id", "n", "--namespace", "ns"},
		{"--control-plane", "http://x", "--node-id", "n", "--namespace", "ns", "--workload", "w", "--labels", "novalue"},
		{"--control-plane", "http://x", "--node-id", "n", "--namespace", "ns", "--workload", "w", "--memory-limit-bytes", "-1"},
		{"--control-plane", "x", "--node-id", "n", "--namespace", "ns", "--workload", "w"},
		{"--bogus"},
	} {
		var stdout strings.Builder
		if code := run(args, strings.NewReader(""), &stdout, io.Discard); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
		if !strings.Contains(stdout.String(), `"event":"error"`) {
			t.Errorf("%v: no error event on stdout: %q", args, stdout.String())
		}
	}
}

func TestParseLabels(t *testing.T) {
	labels, err := parseLabels("app=probe, tier=backend,empty=")
	if err != nil || len(labels) != 3 || labels["app"] != "probe" || labels["tier"] != "backend" || labels["empty"] != "" {
		t.Errorf("%v %v", labels, err)
	}
	if labels, err := parseLabels(""); err != nil || len(labels) != 0 {
		t.Errorf("empty: %v %v", labels, err)
	}
	if _, err := parseLabels("=v"); err == nil {
		t.Error("empty key accepted")
	}
}
