// Command meshward-tuning-probe is a tiny Go program that embeds the tuning agent,
// for the end-to-end test of runtime tuning (issue #7): the test starts the control
// plane, runs this probe, drives its heap through stdin and reads what it applied
// from stdout.
//
// Flags:
//
//	--control-plane URL        control plane HTTP base URL (required)
//	--node-id ID               node id (required)
//	--namespace NS             namespace (required)
//	--workload W               workload (required)
//	--labels k=v,k2=v2         labels (optional)
//	--pod P, --container C     Kubernetes pod/container (optional)
//	--memory-limit-bytes N     memory limit to report; 0 = read the cgroup (default 0)
//	--report-interval 200ms    report interval (default 5s)
//	--poll-wait 2s             long-poll wait (default 30s)
//
// Stdout: one JSON object per line, written whole in one write:
//
//	{"event":"started","nodeId":..,"goVersion":..,"heapSource":..}
//	{"event":"reported","liveHeapBytes":N}
//	{"event":"applied","version":..,"memoryLimitBytes":N|null,"gcPercent":N|null,
//	 "readbackMemoryLimit":N,"readbackGCPercent":N,"liveHeapBytes":N}
//	{"event":"error","message":..}
//
// Stdin, one command per line: "grow N" (allocate N MiB, keep it reachable, run a GC
// so the live heap really grows, report at once), "shrink" (drop it all, GC, report
// at once), "quit" (exit 0). End of input is "quit".
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/meshward/meshward/agents/go/tuning"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// maxGrowMiB bounds one "grow": a typo must not take the machine's memory.
const maxGrowMiB = 4096

// events writes one JSON line per event, whole, under a lock (agent callbacks come
// from two goroutines).
type events struct {
	mu  sync.Mutex
	out io.Writer
}

func (e *events) emit(fields map[string]interface{}) {
	line, err := json.Marshal(fields)
	if err != nil {
		line = []byte(`{"event":"error","message":"cannot encode event"}`)
	}
	line = append(line, '\n')
	e.mu.Lock()
	defer e.mu.Unlock()
	_, _ = e.out.Write(line)
	if flusher, ok := e.out.(interface{ Flush() error }); ok {
		_ = flusher.Flush()
	}
}

func (e *events) error(err error) {
	e.emit(map[string]interface{}{"event": "error", "message": err.Error()})
}

// run is main without the process: the exit code, 0 after quit/EOF, 2 on bad flags.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	out := &events{out: stdout}
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stderr, "meshward-tuning-probe: %v\n", err)
			out.error(err)
		}
		return 2
	}

	var heldMu sync.Mutex
	var held [][]byte
	var agent *tuning.Agent

	cfg.OnReport = func(report tuning.Report) {
		out.emit(map[string]interface{}{"event": "reported", "liveHeapBytes": report.LiveHeapBytes})
	}
	cfg.OnApply = func(applied tuning.Applied) {
		out.emit(map[string]interface{}{
			"event":               "applied",
			"version":             applied.Version,
			"memoryLimitBytes":    applied.MemoryLimitBytes, // nil → null
			"gcPercent":           applied.GCPercent,
			"readbackMemoryLimit": applied.ReadbackMemoryLimit,
			"readbackGCPercent":   applied.ReadbackGCPercent,
			"liveHeapBytes":       applied.LiveHeapBytes,
		})
	}
	cfg.OnError = out.error
	agent, err = tuning.New(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "meshward-tuning-probe: %v\n", err)
		out.error(err)
		return 2
	}
	out.emit(map[string]interface{}{
		"event":      "started",
		"nodeId":     cfg.NodeID,
		"goVersion":  runtime.Version(),
		"heapSource": tuning.HeapSource(),
	})

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = agent.Run(ctx)
	}()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(2 * time.Second): // requests are cancelled; do not hang on exit
		}
	}()

	lines := bufio.NewScanner(stdin)
	for lines.Scan() {
		fields := strings.Fields(lines.Text())
		if len(fields) == 0 {
			continue
		}
		switch {
		case fields[0] == "quit" && len(fields) == 1:
			return 0
		case fields[0] == "grow" && len(fields) == 2:
			mib, err := strconv.Atoi(fields[1])
			if err != nil || mib <= 0 || mib > maxGrowMiB {
				out.error(fmt.Errorf("grow: %q is not a MiB count in 1..%d", fields[1], maxGrowMiB))
				continue
			}
			heldMu.Lock()
			held = append(held, allocate(mib)...)
			heldMu.Unlock()
			runtime.GC()
			agent.ReportNow()
		case fields[0] == "shrink" && len(fields) == 1:
			heldMu.Lock()
			held = nil
			heldMu.Unlock()
			runtime.GC()
			agent.ReportNow()
		default:
			out.error(fmt.Errorf("unknown command %q (grow N | shrink | quit)", lines.Text()))
		}
	}
	if err := lines.Err(); err != nil {
		out.error(fmt.Errorf("reading stdin: %w", err))
	}
	heldMu.Lock()
	runtime.KeepAlive(held)
	heldMu.Unlock()
	return 0
}

// allocate returns mib 1 MiB blocks with every page written, so they are resident
// (memory fresh from the OS is not zeroed by Go, and untouched pages cost no RSS).
func allocate(mib int) [][]byte {
	blocks := make([][]byte, mib)
	for i := range blocks {
		block := make([]byte, 1<<20)
		for page := 0; page < len(block); page += 4096 {
			block[page] = 1
		}
		blocks[i] = block
	}
	return blocks
}

func parseFlags(args []string, stderr io.Writer) (tuning.Config, error) {
	flags := flag.NewFlagSet("meshward-tuning-probe", flag.ContinueOnError)
	flags.SetOutput(stderr)
	var cfg tuning.Config
	var labels string
	flags.StringVar(&cfg.ControlPlane, "control-plane", "", "control plane HTTP base URL (required)")
	flags.StringVar(&cfg.NodeID, "node-id", "", "node id (required)")
	flags.StringVar(&cfg.Namespace, "namespace", "", "namespace (required)")
	flags.StringVar(&cfg.Workload, "workload", "", "workload (required)")
	flags.StringVar(&labels, "labels", "", "labels as k=v,k2=v2")
	flags.StringVar(&cfg.Pod, "pod", "", "Kubernetes pod name (optional)")
	flags.StringVar(&cfg.Container, "container", "", "Kubernetes container name (optional)")
	flags.Int64Var(&cfg.MemoryLimitOverride, "memory-limit-bytes", 0, "memory limit to report; 0 = read the cgroup")
	flags.DurationVar(&cfg.ReportInterval, "report-interval", tuning.DefaultReportInterval, "report interval")
	flags.DurationVar(&cfg.PollWait, "poll-wait", tuning.DefaultPollWait, "settings long-poll wait")
	if err := flags.Parse(args); err != nil {
		return cfg, err
	}
	if flags.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", flags.Args())
	}
	for _, required := range []struct{ name, value string }{
		{"--control-plane", cfg.ControlPlane}, {"--node-id", cfg.NodeID},
		{"--namespace", cfg.Namespace}, {"--workload", cfg.Workload},
	} {
		if required.value == "" {
			return cfg, fmt.Errorf("%s is required", required.name)
		}
	}
	if cfg.MemoryLimitOverride < 0 {
		return cfg, fmt.Errorf("--memory-limit-bytes must be ≥ 0, got %d", cfg.MemoryLimitOverride)
	}
	if cfg.ReportInterval <= 0 || cfg.PollWait <= 0 {
		return cfg, errors.New("--report-interval and --poll-wait must be > 0")
	}
	parsed, err := parseLabels(labels)
	if err != nil {
		return cfg, err
	}
	cfg.Labels = parsed
	return cfg, nil
}

// parseLabels reads "k=v,k2=v2" (empty: no labels).
func parseLabels(text string) (map[string]string, error) {
	labels := map[string]string{}
	if strings.TrimSpace(text) == "" {
		return labels, nil
	}
	for _, pair := range strings.Split(text, ",") {
		key, value, ok := strings.Cut(pair, "=")
		key = strings.TrimSpace(key)
		if !ok || key == "" {
			return nil, fmt.Errorf("--labels: %q is not key=value", pair)
		}
		labels[key] = strings.TrimSpace(value)
	}
	return labels, nil
}
