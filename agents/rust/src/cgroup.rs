//! The container memory limit as the kernel enforces it: cgroup v2 `memory.max`, or
//! cgroup v1 `memory.limit_in_bytes` (docs/adr/0007, "Inputs").
//!
//! The process's own cgroup comes from `/proc/self/cgroup`. Inside a container the
//! cgroup file system is usually mounted at the container's cgroup (cgroup namespace),
//! so the mount root's file is tried as well; of every limit found on the way up the
//! hierarchy the smallest is the one in force.

use std::path::{Path, PathBuf};

/// Values at or above this are "no limit": cgroup v1 reports an unlimited group as the
/// largest page-aligned `i64` (9223372036854771712), and no container has 4 EiB.
const UNLIMITED_FROM: u64 = 1 << 62;

/// Reads one limit file's content: `Ok(None)` for no limit (`max`, `-1`, 0 or an
/// absurdly large value), an error naming the content when it is not a number.
pub fn parse_limit(text: &str) -> Result<Option<u64>, String> {
    let value = text.trim();
    if value == "max" || value == "-1" {
        return Ok(None);
    }
    match value.parse::<u64>() {
        // 0 cannot be the limit of a running process; the report contract reads 0 as none.
        Ok(0) => Ok(None),
        Ok(bytes) if bytes >= UNLIMITED_FROM => Ok(None),
        Ok(bytes) => Ok(Some(bytes)),
        Err(_) => Err(format!("{value:?} is neither a byte count nor \"max\"")),
    }
}

/// The limit files that may apply to this process, relative to the file-system root,
/// from `/proc/self/cgroup`'s content: the process's cgroup and its ancestors, then
/// the mount root (a container's own cgroup under a cgroup namespace).
pub fn limit_files(proc_self_cgroup: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for line in proc_self_cgroup.lines() {
        // `hierarchy-id:controllers:path`; the path may itself contain ':'.
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let (mount, file) = if id == "0" && controllers.is_empty() {
            ("sys/fs/cgroup", "memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            ("sys/fs/cgroup/memory", "memory.limit_in_bytes")
        } else {
            continue;
        };
        let mut dir = Path::new(path.trim_start_matches('/'));
        loop {
            let candidate = Path::new(mount).join(dir).join(file);
            if !files.contains(&candidate) {
                files.push(candidate);
            }
            match dir.parent() {
                Some(parent) => dir = parent,
                None => break,
            }
        }
    }
    files
}

/// The memory limit in force for this process (`None`: no limit, or no cgroup memory
/// controller visible).
pub fn detect_memory_limit() -> Result<Option<u64>, String> {
    detect_memory_limit_under(Path::new("/"))
}

/// [`detect_memory_limit`] with the file system rooted at `root` (for tests).
pub fn detect_memory_limit_under(root: &Path) -> Result<Option<u64>, String> {
    let proc_self_cgroup =
        std::fs::read_to_string(root.join("proc/self/cgroup")).unwrap_or_default();
    let mut smallest: Option<u64> = None;
    for file in limit_files(&proc_self_cgroup) {
        let path = root.join(&file);
        // Most candidates do not exist (an ancestor outside the namespace, the other
        // cgroup version): only the ones that do count.
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        if let Some(limit) = parse_limit(&text).map_err(|e| format!("{}: {e}", path.display()))? {
            smallest = Some(smallest.map_or(limit, |s| s.min(limit)));
        }
    }
    Ok(smallest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_values_are_parsed() {
        assert_eq!(parse_limit("268435456\n"), Ok(Some(268_435_456)));
        assert_eq!(parse_limit("  1048576  "), Ok(Some(1_048_576)));
        // v2 unlimited, v1 unlimited (page-aligned i64::MAX), -1, zero.
        assert_eq!(parse_limit("max\n"), Ok(None));
        assert_eq!(parse_limit("9223372036854771712\n"), Ok(None));
        assert_eq!(parse_limit("-1"), Ok(None));
        assert_eq!(parse_limit("0"), Ok(None));
        assert_eq!(
            parse_limit(&(UNLIMITED_FROM - 1).to_string()),
            Ok(Some(UNLIMITED_FROM - 1))
        );
    }

    #[test]
    fn garbage_is_an_error_naming_the_content() {
        for garbage in ["", "lots", "12M", "-5", "1.5", "99999999999999999999999"] {
            let err = parse_limit(garbage).unwrap_err();
            assert!(
                err.contains(&format!("{:?}", garbage.trim())),
                "{garbage}: {err}"
            );
        }
    }

    #[test]
    fn v2_candidates_walk_up_to_the_mount_root() {
        let files = limit_files("0::/kubepods/pod1/ctr\n");
        let expected: Vec<PathBuf> = [
            "sys/fs/cgroup/kubepods/pod1/ctr/memory.max",
            "sys/fs/cgroup/kubepods/pod1/memory.max",
            "sys/fs/cgroup/kubepods/memory.max",
            "sys/fs/cgroup/memory.max",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(files, expected);
        assert_eq!(
            limit_files("0::/\n"),
            vec![PathBuf::from("sys/fs/cgroup/memory.max")]
        );
    }

    #[test]
    fn v1_candidates_come_from_the_memory_controller_line() {
        let text = "12:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n1:name=systemd:/docker/abc\n";
        let files = limit_files(text);
        assert_eq!(
            files,
            vec![
                PathBuf::from("sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes"),
                PathBuf::from("sys/fs/cgroup/memory/docker/memory.limit_in_bytes"),
                PathBuf::from("sys/fs/cgroup/memory/memory.limit_in_bytes"),
            ]
        );
        assert!(limit_files("garbage\n\n3:cpu:/x\n").is_empty());
    }

    fn write(root: &Path, file: &str, content: &str) {
        let path = root.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    #[test]
    fn v2_limit_is_the_smallest_on_the_way_up() {
        let root = tempfile::tempdir().unwrap();
        write(root.path(), "proc/self/cgroup", "0::/kubepods/pod1/ctr\n");
        write(
            root.path(),
            "sys/fs/cgroup/kubepods/pod1/ctr/memory.max",
            "max\n",
        );
        write(
            root.path(),
            "sys/fs/cgroup/kubepods/pod1/memory.max",
            "536870912\n",
        );
        write(
            root.path(),
            "sys/fs/cgroup/kubepods/memory.max",
            "1073741824\n",
        );
        assert_eq!(
            detect_memory_limit_under(root.path()),
            Ok(Some(536_870_912))
        );
    }

    #[test]
    fn v2_in_a_cgroup_namespace_reads_the_mount_root() {
        let root = tempfile::tempdir().unwrap();
        write(root.path(), "proc/self/cgroup", "0::/\n");
        write(root.path(), "sys/fs/cgroup/memory.max", "268435456\n");
        assert_eq!(
            detect_memory_limit_under(root.path()),
            Ok(Some(268_435_456))
        );
    }

    #[test]
    fn v1_limit_and_v1_unlimited() {
        let root = tempfile::tempdir().unwrap();
        // Hybrid host: a v2 line too, but no v2 memory file; v1 holds the limit.
        write(
            root.path(),
            "proc/self/cgroup",
            "4:memory:/docker/abc\n0::/docker/abc\n",
        );
        write(
            root.path(),
            "sys/fs/cgroup/memory/memory.limit_in_bytes",
            "134217728\n",
        );
        assert_eq!(
            detect_memory_limit_under(root.path()),
            Ok(Some(134_217_728))
        );
        write(
            root.path(),
            "sys/fs/cgroup/memory/memory.limit_in_bytes",
            "9223372036854771712\n",
        );
        assert_eq!(detect_memory_limit_under(root.path()), Ok(None));
    }

    #[test]
    fn no_cgroup_is_no_limit_and_garbage_is_an_error() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(detect_memory_limit_under(root.path()), Ok(None));
        write(root.path(), "proc/self/cgroup", "0::/app\n");
        write(root.path(), "sys/fs/cgroup/app/memory.max", "lots\n");
        let err = detect_memory_limit_under(root.path()).unwrap_err();
        assert!(
            err.contains("sys/fs/cgroup/app/memory.max: \"lots\""),
            "{err}"
        );
    }
}
