package tuning

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// DefaultCgroupRoot is where the container's cgroup is mounted.
const DefaultCgroupRoot = "/sys/fs/cgroup"

// cgroupUnlimited: limits at or above 2^60 bytes (1 EiB) mean "no limit". cgroup v1
// reports "unlimited" as the largest page-aligned int64 (9223372036854771712), and
// no real container has an exbibyte of memory.
const cgroupUnlimited = int64(1) << 60

// CgroupMemoryLimit reads the memory limit of the cgroup mounted at root (normally
// DefaultCgroupRoot): cgroup v2 memory.max first, then cgroup v1
// memory/memory.limit_in_bytes. It returns 0 when there is no limit ("max", a value
// ≥ 2^60) or neither file exists (not in a container, or cgroups not mounted), and an
// error only when a file exists but cannot be read or parsed.
func CgroupMemoryLimit(root string) (int64, error) {
	v2 := filepath.Join(root, "memory.max")
	limit, found, err := readLimitFile(v2)
	if found || err != nil {
		return limit, err
	}
	v1 := filepath.Join(root, "memory", "memory.limit_in_bytes")
	limit, _, err = readLimitFile(v1)
	return limit, err
}

// readLimitFile parses one limit file; found is false when it does not exist.
func readLimitFile(path string) (limit int64, found bool, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, true, fmt.Errorf("cgroup memory limit: %w", err)
	}
	limit, err = parseLimit(string(data))
	if err != nil {
		return 0, true, fmt.Errorf("cgroup memory limit: %s: %w", path, err)
	}
	return limit, true, nil
}

// parseLimit reads "max", "-1" (v1 on some kernels) or a byte count; 0 = no limit.
func parseLimit(text string) (int64, error) {
	text = strings.TrimSpace(text)
	if text == "max" || text == "-1" {
		return 0, nil
	}
	value, err := strconv.ParseUint(text, 10, 64)
	if err != nil {
		var numErr *strconv.NumError
		if errors.As(err, &numErr) && errors.Is(numErr.Err, strconv.ErrRange) {
			return 0, nil // beyond uint64: certainly "unlimited"
		}
		return 0, fmt.Errorf("%q is neither \"max\" nor a byte count", text)
	}
	if value >= uint64(cgroupUnlimited) {
		return 0, nil
	}
	return int64(value), nil
}
