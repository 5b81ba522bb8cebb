package tuning

import (
	"os"
	"path/filepath"
	"testing"
)

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestCgroupMemoryLimit(t *testing.T) {
	cases := []struct {
		name  string
		files map[string]string
		want  int64
	}{
		{"v2 limit", map[string]string{"memory.max": "536870912\n"}, 512 << 20},
		{"v2 max", map[string]string{"memory.max": "max\n"}, 0},
		{"v2 absurd", map[string]string{"memory.max": "9223372036854775807\n"}, 0},
		{"v1 limit", map[string]string{"memory/memory.limit_in_bytes": "1073741824\n"}, 1 << 30},
		{"v1 unlimited", map[string]string{"memory/memory.limit_in_bytes": "9223372036854771712\n"}, 0},
		{"v1 just below 2^60", map[string]string{"memory/memory.limit_in_bytes": "1152921504606846975"}, 1<<60 - 1},
		{"v1 -1", map[string]string{"memory/memory.limit_in_bytes": "-1"}, 0},
		{"beyond uint64", map[string]string{"memory.max": "99999999999999999999999"}, 0},
		{"v2 wins over v1", map[string]string{"memory.max": "1000", "memory/memory.limit_in_bytes": "2000"}, 1000},
		{"v2 max wins over v1", map[string]string{"memory.max": "max", "memory/memory.limit_in_bytes": "2000"}, 0},
		{"none", map[string]string{}, 0},
	}
	for _, c := range cases {
		root := t.TempDir()
		for name, content := range c.files {
			writeFile(t, filepath.Join(root, name), content)
		}
		got, err := CgroupMemoryLimit(root)
		if err != nil || got != c.want {
			t.Errorf("%s: got %d, %v; want %d", c.name, got, err, c.want)
		}
	}
}

func TestCgroupMemoryLimitErrors(t *testing.T) {
	for _, content := range []string{"", "lots", "12k", "1.5"} {
		root := t.TempDir()
		writeFile(t, filepath.Join(root, "memory.max"), content)
		if got, err := CgroupMemoryLimit(root); err == nil {
			t.Errorf("%q: accepted as %d", content, got)
		}
	}
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "memory.max"), 0o755); err != nil { // a directory: unreadable
		t.Fatal(err)
	}
	if _, err := CgroupMemoryLimit(root); err == nil {
		t.Error("an unreadable memory.max was taken as no limit")
	}
}

func TestReportedLimitComesFromTheCgroupUnlessOverridden(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "memory.max"), "268435456\n")
	cfg := Config{ControlPlane: "http://cp", NodeID: "n", Namespace: "ns", Workload: "w", CgroupRoot: root}
	agent, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := agent.memoryLimit(); got != 256<<20 || err != nil {
		t.Errorf("cgroup: %d %v", got, err)
	}
	cfg.MemoryLimitOverride = 1 << 30
	agent, _ = New(cfg)
	if got, _ := agent.memoryLimit(); got != 1<<30 {
		t.Errorf("override: %d", got)
	}
}
