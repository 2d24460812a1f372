//! The daemon's per-call records (`records.dir`, daily JSON-lines files) and recordings
//! (`recording.dir`, pcapng files), read back by tests.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Every record under `dir` once there are at least `n` (waits up to 10 s: the writer joins
/// the media half, which comes when the call's media task stops); panics with what it found
/// otherwise. Each line must be one JSON object.
pub fn wait_records(dir: &Path, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut records = Vec::new();
        let mut files: Vec<_> = std::fs::read_dir(dir).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        files.sort();
        for f in files.iter().filter(|p| p.extension().is_some_and(|e| e == "jsonl")) {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            for line in text.lines() {
                let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{}: not JSON ({e}): {line}", f.display()));
                assert!(v.is_object(), "{line}");
                records.push(v);
            }
        }
        if records.len() >= n || Instant::now() > deadline {
            assert!(records.len() >= n, "{} call records in {} (files {files:?}), wanted {n}: {records:#?}", records.len(), dir.display());
            return records;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A fresh directory under the system temp dir for one test's records.
pub fn temp_dir(test: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("estuary-records-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Every capture under `dir` (`recording.dir`/<date>/<file>.pcapng), sorted.
pub fn captures(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v = Vec::new();
    for day in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(day.path()).into_iter().flatten().flatten() {
            v.push(f.path());
        }
    }
    v.sort();
    v
}
