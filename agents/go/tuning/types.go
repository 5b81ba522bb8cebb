package tuning

// Report is the body of POST /tuning/v1/report (ADR 0007). Every field is always
// sent: a control plane that treats a missing field as an error and one that treats
// an empty/zero field as "none" both read it correctly.
type Report struct {
	NodeID    string            `json:"nodeId"`
	Namespace string            `json:"namespace"`
	Workload  string            `json:"workload"`
	Labels    map[string]string `json:"labels"`
	Pod       string            `json:"pod"`
	Container string            `json:"container"`
	// MemoryLimitBytes is the container memory limit; 0 = none.
	MemoryLimitBytes int64 `json:"memoryLimitBytes"`
	// LiveHeapBytes is the heap reachable after the last GC (see the package doc).
	LiveHeapBytes uint64 `json:"liveHeapBytes"`
	// Agent names this agent and the Go runtime, for the policy status.
	Agent string `json:"agent"`
}

// Settings is the document the control plane delivers for one instance (ADR 0007).
// A nil MemoryLimitBytes / GCPercent means "not set by the control plane": the agent
// restores what the process started with.
type Settings struct {
	NodeID           string `json:"nodeId"`
	Policy           string `json:"policy"`
	Version          string `json:"version"`
	MemoryLimitBytes *int64 `json:"memoryLimitBytes,omitempty"`
	GCPercent        *int   `json:"gcPercent,omitempty"`
	HeapNearLimit    bool   `json:"heapNearLimit"`
	Reason           string `json:"reason"`
}

// Applied describes one application of a settings document, handed to
// Config.OnApply after the values were set and read back from the runtime.
type Applied struct {
	Version       string
	Policy        string
	Reason        string
	HeapNearLimit bool
	// MemoryLimitBytes and GCPercent are the values as pushed (nil: not set by the
	// control plane, so the starting value was restored).
	MemoryLimitBytes *int64
	GCPercent        *int
	// ReadbackMemoryLimit is debug.SetMemoryLimit(-1) after applying.
	ReadbackMemoryLimit int64
	// ReadbackGCPercent is the GOGC the runtime reports after applying.
	ReadbackGCPercent int
	// LiveHeapBytes is the live heap of the last successful report.
	LiveHeapBytes uint64
	// Refused lists pushed values that were not applied, and why (the previous value
	// was kept). Empty when everything was applied.
	Refused []string
}
