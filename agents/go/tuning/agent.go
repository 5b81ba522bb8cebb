package tuning

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Version of this agent, sent in reports as part of Report.Agent.
const Version = "0.1.0"

// Defaults for the zero values of Config.
const (
	DefaultReportInterval = 5 * time.Second
	// DefaultPollWait is the control plane's default long-poll wait (it allows 60 s at
	// most).
	DefaultPollWait = 30 * time.Second
)

// defaultMargin is added to the long-poll wait for the request timeout (and doubled
// for reports), so a control plane that stops answering mid-request cannot hang the
// agent.
const defaultMargin = 5 * time.Second

// maxServerWait is the longest wait the control plane holds a poll (ADR 0007).
const maxServerWait = 60 * time.Second

// maxBody bounds what is read from a reply: a settings document is a few hundred
// bytes, and a misbehaving server must not make the agent buffer gigabytes.
const maxBody = 1 << 20

// Config says which control plane to talk to and who this instance is.
type Config struct {
	// ControlPlane is the base URL of the control plane's HTTP API, e.g.
	// "http://meshward-control-plane.meshward:8080".
	ControlPlane string
	// NodeID identifies this instance (one per process), e.g. "orders-7d9f.shop".
	NodeID string
	// Namespace and Workload select the RuntimeTuning policy; Labels too.
	Namespace string
	Workload  string
	Labels    map[string]string
	// Pod and Container let the control plane read the memory limit from the Pod spec
	// (Kubernetes mode); optional.
	Pod       string
	Container string
	// ReportInterval: how often the live heap is reported (default 5 s). A move of
	// more than 10 % is reported sooner.
	ReportInterval time.Duration
	// PollWait: how long one settings long-poll may wait (default 30 s).
	PollWait time.Duration
	// HTTPClient to use (default: a new http.Client; timeouts are set per request).
	HTTPClient *http.Client
	// MemoryLimitOverride, when > 0, is reported instead of the cgroup limit (tests,
	// or where the cgroup cannot be read).
	MemoryLimitOverride int64
	// CgroupRoot is where the cgroup file system is mounted (default
	// DefaultCgroupRoot).
	CgroupRoot string
	// OnApply is called after each new settings version was applied and read back.
	OnApply func(Applied)
	// OnReport is called after each report the control plane accepted.
	OnReport func(Report)
	// OnError is called for every failure (the agent keeps going: it retries or keeps
	// the previous settings). Default: the standard logger.
	OnError func(error)
}

// Agent reports this process's memory to the control plane and applies the settings
// it gets back. Create it with New and start it with Run.
type Agent struct {
	cfg    Config
	client *http.Client
	base   string // ControlPlane without trailing slash

	// What the process started with, restored when the control plane sets nothing.
	startMemoryLimit int64
	startGCPercent   int

	// Test hooks (unexported so the public surface stays the documented one).
	liveHeap    func() uint64
	margin      time.Duration
	sampleEvery time.Duration
	newBackoff  func() *Backoff

	reportNow chan struct{}

	reportMu sync.Mutex // one report at a time
	applyMu  sync.Mutex // one application at a time, in order; guards version

	version string // last applied settings version (applyMu)

	mu             sync.Mutex // guards the fields below
	gcPercent      int        // GOGC in force as last applied or read back
	lastReported   uint64     // live heap of the last accepted report
	reported       bool       // a report was accepted at least once
	lastAttempt    time.Time  // last report attempt
	retryAt        time.Time  // no scheduled report before this (after a failure)
	reportFailures *Backoff
}

// New checks the configuration and records the process's current memory limit and
// GOGC, which are restored whenever the control plane sets none.
func New(cfg Config) (*Agent, error) {
	base := strings.TrimRight(cfg.ControlPlane, "/")
	parsed, err := url.Parse(base)
	if err != nil || (parsed.Scheme != "http" && parsed.Scheme != "https") || parsed.Host == "" {
		return nil, fmt.Errorf("tuning: ControlPlane %q is not an http(s) base URL", cfg.ControlPlane)
	}
	for _, field := range []struct{ name, value string }{
		{"NodeID", cfg.NodeID}, {"Namespace", cfg.Namespace}, {"Workload", cfg.Workload},
	} {
		if strings.TrimSpace(field.value) == "" {
			return nil, fmt.Errorf("tuning: %s is required", field.name)
		}
	}
	if cfg.ReportInterval < 0 || cfg.PollWait < 0 || cfg.MemoryLimitOverride < 0 {
		return nil, errors.New("tuning: ReportInterval, PollWait and MemoryLimitOverride must not be negative")
	}
	if cfg.ReportInterval == 0 {
		cfg.ReportInterval = DefaultReportInterval
	}
	if cfg.PollWait == 0 {
		cfg.PollWait = DefaultPollWait
	}
	if cfg.CgroupRoot == "" {
		cfg.CgroupRoot = DefaultCgroupRoot
	}
	labels := make(map[string]string, len(cfg.Labels))
	for k, v := range cfg.Labels {
		labels[k] = v
	}
	cfg.Labels = labels
	client := cfg.HTTPClient
	if client == nil {
		client = &http.Client{}
	}

	sampleEvery := cfg.ReportInterval / 5
	if sampleEvery < 50*time.Millisecond {
		sampleEvery = 50 * time.Millisecond
	}
	if sampleEvery > time.Second {
		sampleEvery = time.Second
	}
	a := &Agent{
		cfg:              cfg,
		client:           client,
		base:             base,
		startMemoryLimit: readMemoryLimit(),
		startGCPercent:   startingGCPercent(),
		margin:           defaultMargin,
		sampleEvery:      sampleEvery,
		newBackoff:       NewBackoff,
		reportNow:        make(chan struct{}, 1),
	}
	a.gcPercent = a.startGCPercent
	a.liveHeap = func() uint64 {
		a.mu.Lock()
		gcPercent := a.gcPercent
		a.mu.Unlock()
		return readLiveHeap(gcPercent)
	}
	return a, nil
}

// StartingSettings returns the memory limit and GOGC the process had when New ran:
// what is restored when the control plane sets none.
func (a *Agent) StartingSettings() (memoryLimit int64, gcPercent int) {
	return a.startMemoryLimit, a.startGCPercent
}

// ReportNow asks for a report as soon as possible (for example after the application
// allocated or released a lot of memory); it does not wait for it.
func (a *Agent) ReportNow() {
	select {
	case a.reportNow <- struct{}{}:
	default: // one is pending already
	}
}

// Run reports and long-polls until ctx is done, then returns ctx.Err(). Failures are
// passed to Config.OnError and retried with backoff; Run never gives up on its own.
// Call it once per Agent.
func (a *Agent) Run(ctx context.Context) error {
	a.mu.Lock()
	a.reportFailures = a.newBackoff()
	a.mu.Unlock()
	if err := a.report(ctx); err != nil && ctx.Err() == nil {
		a.fail(err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		a.reportLoop(ctx)
	}()
	go func() {
		defer wg.Done()
		a.pollLoop(ctx)
	}()
	wg.Wait()
	return ctx.Err()
}

func (a *Agent) fail(err error) {
	if a.cfg.OnError != nil {
		a.cfg.OnError(err)
		return
	}
	log.Printf("meshward tuning agent: %v", err)
}

// reportLoop sends scheduled reports: every ReportInterval, sooner when the live heap
// moved by more than 10 %, at once on ReportNow.
func (a *Agent) reportLoop(ctx context.Context) {
	ticker := time.NewTicker(a.sampleEvery)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.reportNow:
		case <-ticker.C:
			if !a.reportDue(time.Now()) {
				continue
			}
		}
		if err := a.report(ctx); err != nil && ctx.Err() == nil {
			a.fail(err)
		}
	}
}

// reportDue: not while backing off after a failure; otherwise when nothing was
// reported yet, the interval passed, or the heap moved by more than 10 %.
func (a *Agent) reportDue(now time.Time) bool {
	a.mu.Lock()
	retryAt, reported, last, lastAttempt := a.retryAt, a.reported, a.lastReported, a.lastAttempt
	a.mu.Unlock()
	if now.Before(retryAt) {
		return false
	}
	if !reported || now.Sub(lastAttempt) >= a.cfg.ReportInterval {
		return true
	}
	return heapMoved(last, a.liveHeap())
}

// heapMoved: more than 10 % away from the last reported value.
func heapMoved(last, now uint64) bool {
	diff := now - last
	if now < last {
		diff = last - now
	}
	return diff*10 > last
}

// memoryLimit is the limit to report: the override, else the cgroup's (0 = none).
func (a *Agent) memoryLimit() (int64, error) {
	if a.cfg.MemoryLimitOverride > 0 {
		return a.cfg.MemoryLimitOverride, nil
	}
	return CgroupMemoryLimit(a.cfg.CgroupRoot)
}

// report POSTs the current numbers and applies the document in the reply when its
// version is new (after a control-plane restart the recomputed document usually has
// the version in force: nothing to do, as with the Rust agent).
func (a *Agent) report(ctx context.Context) error {
	a.reportMu.Lock()
	defer a.reportMu.Unlock()
	err := a.sendReport(ctx)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.lastAttempt = time.Now()
	if a.reportFailures == nil {
		a.reportFailures = a.newBackoff()
	}
	if err != nil {
		a.retryAt = a.lastAttempt.Add(a.reportFailures.Next())
	} else {
		a.reportFailures.Reset()
		a.retryAt = time.Time{}
	}
	return err
}

func (a *Agent) sendReport(ctx context.Context) error {
	limit, limitErr := a.memoryLimit()
	if limitErr != nil {
		// Report anyway, without a limit: the control plane may know it from the Pod
		// spec, and the heap report is still useful.
		a.fail(limitErr)
	}
	report := Report{
		NodeID:           a.cfg.NodeID,
		Namespace:        a.cfg.Namespace,
		Workload:         a.cfg.Workload,
		Labels:           a.cfg.Labels,
		Pod:              a.cfg.Pod,
		Container:        a.cfg.Container,
		MemoryLimitBytes: limit,
		LiveHeapBytes:    a.liveHeap(),
		Agent:            "meshward-go-agent/" + Version + " " + runtime.Version(),
	}
	body, err := json.Marshal(report)
	if err != nil {
		return fmt.Errorf("report: encoding: %w", err)
	}
	endpoint := a.base + "/tuning/v1/report"
	ctx, cancel := context.WithTimeout(ctx, 2*a.margin)
	defer cancel()
	request, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	request.Header.Set("Content-Type", "application/json")
	request.Header.Set("Accept", "application/json")
	response, err := a.client.Do(request)
	if err != nil {
		return fmt.Errorf("report: %w", err) // *url.Error names method and URL
	}
	defer response.Body.Close()
	reply, err := io.ReadAll(io.LimitReader(response.Body, maxBody))
	if err != nil {
		return fmt.Errorf("report to %s: reading the reply: %w", endpoint, err)
	}
	if response.StatusCode != http.StatusOK {
		return fmt.Errorf("report to %s: control plane answered %s: %s",
			endpoint, response.Status, snippet(reply))
	}

	a.mu.Lock()
	a.lastReported = report.LiveHeapBytes
	a.reported = true
	a.mu.Unlock()
	if a.cfg.OnReport != nil {
		a.cfg.OnReport(report)
	}

	settings, err := a.decodeSettings(reply, response.Header.Get("ETag"))
	if err != nil {
		return fmt.Errorf("report to %s: the reply is not a settings document: %w", endpoint, err)
	}
	a.applyIfNew(settings)
	return nil
}

// decodeSettings parses a settings document and checks it is for this node and
// versioned (without a version the long poll could not say what it has).
func (a *Agent) decodeSettings(body []byte, etag string) (Settings, error) {
	var settings Settings
	if err := json.Unmarshal(body, &settings); err != nil {
		return Settings{}, fmt.Errorf("%v: %s", err, snippet(body))
	}
	if settings.Version == "" {
		settings.Version = unquoteETag(etag)
	}
	if settings.Version == "" {
		return Settings{}, fmt.Errorf("no version (neither in the body nor in ETag): %s", snippet(body))
	}
	if settings.NodeID != "" && settings.NodeID != a.cfg.NodeID {
		return Settings{}, fmt.Errorf("document is for node %q, this is %q", settings.NodeID, a.cfg.NodeID)
	}
	return settings, nil
}

// applyIfNew applies a document unless its version is the one in force.
func (a *Agent) applyIfNew(settings Settings) {
	a.applyMu.Lock()
	defer a.applyMu.Unlock()
	if settings.Version == a.version {
		return
	}
	applied := a.apply(settings)
	a.version = settings.Version
	for _, refused := range applied.Refused {
		a.fail(fmt.Errorf("settings %s: %s", settings.Version, refused))
	}
	if a.cfg.OnApply != nil {
		a.cfg.OnApply(applied)
	}
}

// currentVersion is the version sent in If-None-Match.
func (a *Agent) currentVersion() string {
	a.applyMu.Lock()
	defer a.applyMu.Unlock()
	return a.version
}

type pollOutcome int

const (
	pollChanged pollOutcome = iota
	pollUnchanged
	pollNotFound
)

// pollLoop long-polls the settings. 404 means the control plane has no report from
// this node (it restarted, or the first report failed): report, then poll again.
func (a *Agent) pollLoop(ctx context.Context) {
	backoff := a.newBackoff()
	notFound := 0
	for ctx.Err() == nil {
		started := time.Now()
		outcome, err := a.poll(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			a.fail(err)
			sleep(ctx, backoff.Next())
			continue
		}
		switch outcome {
		case pollNotFound:
			notFound++
			if err := a.report(ctx); err != nil {
				if ctx.Err() == nil {
					a.fail(err)
					sleep(ctx, backoff.Next())
				}
				continue
			}
			if notFound > 1 {
				// Reported, yet still unknown: do not hammer it.
				a.fail(fmt.Errorf("settings for node %q: still 404 after reporting", a.cfg.NodeID))
				sleep(ctx, backoff.Next())
			}
		case pollUnchanged:
			notFound = 0
			expected := a.cfg.PollWait
			if expected > maxServerWait {
				expected = maxServerWait
			}
			if time.Since(started) < expected/2 {
				// 304 long before the wait ran out: a proxy or server that does not
				// hold the request. Slow down instead of spinning.
				sleep(ctx, backoff.Next())
				continue
			}
			backoff.Reset()
		default:
			notFound = 0
			backoff.Reset()
		}
	}
}

// poll is one GET of the settings with If-None-Match.
func (a *Agent) poll(ctx context.Context) (pollOutcome, error) {
	have := a.currentVersion()
	endpoint := a.base + "/tuning/v1/settings/" + url.PathEscape(a.cfg.NodeID) +
		"?wait=" + url.QueryEscape(formatWait(a.cfg.PollWait))
	ctx, cancel := context.WithTimeout(ctx, a.cfg.PollWait+a.margin)
	defer cancel()
	request, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint, nil)
	if err != nil {
		return 0, fmt.Errorf("settings: %w", err)
	}
	request.Header.Set("Accept", "application/json")
	if have != "" {
		request.Header.Set("If-None-Match", `"`+have+`"`)
	}
	response, err := a.client.Do(request)
	if err != nil {
		return 0, fmt.Errorf("settings: %w", err) // *url.Error names method and URL
	}
	defer response.Body.Close()
	body, err := io.ReadAll(io.LimitReader(response.Body, maxBody))
	if err != nil {
		return 0, fmt.Errorf("settings from %s: reading the reply: %w", endpoint, err)
	}
	switch response.StatusCode {
	case http.StatusNotModified:
		return pollUnchanged, nil
	case http.StatusNotFound:
		return pollNotFound, nil
	case http.StatusOK:
	default:
		return 0, fmt.Errorf("settings from %s: control plane answered %s: %s",
			endpoint, response.Status, snippet(body))
	}
	settings, err := a.decodeSettings(body, response.Header.Get("ETag"))
	if err != nil {
		return 0, fmt.Errorf("settings from %s: %w", endpoint, err)
	}
	if have != "" && settings.Version == have {
		return 0, fmt.Errorf("settings from %s: 200 with the version sent in If-None-Match (%q); the server ignores it", endpoint, have)
	}
	a.applyIfNew(settings)
	return pollChanged, nil
}

// formatWait writes the wait as the ADR's example does ("30s"), or in milliseconds
// when it is not a whole number of seconds ("200ms"). Go's Duration.String would
// write "1m0s", which a simple parser may not take.
func formatWait(wait time.Duration) string {
	if wait%time.Second == 0 {
		return strconv.FormatInt(int64(wait/time.Second), 10) + "s"
	}
	return strconv.FormatInt(int64((wait+time.Millisecond-1)/time.Millisecond), 10) + "ms"
}

// unquoteETag turns `"v1"` or `W/"v1"` into v1.
func unquoteETag(etag string) string {
	etag = strings.TrimPrefix(strings.TrimSpace(etag), "W/")
	if unquoted, err := strconv.Unquote(etag); err == nil {
		return unquoted
	}
	return strings.Trim(etag, `"`)
}

// snippet is the start of a body, for error messages.
func snippet(body []byte) string {
	text := strings.TrimSpace(string(body))
	if len(text) > 200 {
		text = text[:200] + "…"
	}
	if text == "" {
		return "(empty body)"
	}
	return text
}
