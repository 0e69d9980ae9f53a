//! House rules a test can check on every `cargo test` (CONTRIBUTING.md): the sans-IO core's
//! non-test code names no clock read, sleep, thread, task, process, file, socket or OS entropy.
//! `cargo clippy` (clippy.toml, denied in src/core/mod.rs) checks the same by type and path;
//! this scan also runs where clippy does not, and names the file and line.

use std::path::{Path, PathBuf};

/// Tokens the core's non-test code must not contain, with the reason shown on failure.
const FORBIDDEN: &[(&str, &str)] = &[
    ("Instant::now", "the core takes `now: Instant` as input"),
    ("SystemTime", "wall-clock time comes in as input"),
    ("thread::sleep", "the core returns its next deadline instead"),
    ("thread::spawn", "threads belong to src/io"),
    ("tokio::", "tokio belongs to src/io"),
    ("UdpSocket", "sockets belong to src/io"),
    ("TcpStream", "sockets belong to src/io"),
    ("TcpListener", "sockets belong to src/io"),
    ("std::process", "processes belong to src/io"),
    ("std::fs", "files are read by src/io and src/config"),
    ("thread_rng", "randomness comes in as an injected RngCore"),
    ("OsRng", "randomness comes in as an injected RngCore"),
    ("rand::random", "randomness comes in as an injected RngCore"),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "tests") {
                continue; // test-only folders (src/core/endpoint/tests/)
            }
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn is_test_file(path: &Path) -> bool {
    let name = path.file_stem().and_then(|n| n.to_str()).unwrap_or("");
    name == "tests" || name.ends_with("_tests") || name == "test_util"
}

/// The violations in one file's text: `(line number, token, reason)`. Stops at the first
/// `#[cfg(test)]` (test modules sit at the end of a file) and skips comment lines.
fn violations(text: &str) -> Vec<(usize, &'static str, &'static str)> {
    let mut found = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let code = line.trim_start();
        if code.starts_with("#[cfg(test)]") {
            break;
        }
        if code.starts_with("//") {
            continue;
        }
        for (token, reason) in FORBIDDEN {
            if code.contains(token) {
                found.push((i + 1, *token, *reason));
            }
        }
    }
    found
}

#[test]
fn the_core_reads_no_clock_and_touches_no_io() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(files.len() > 50, "found only {} files under {}", files.len(), root.display());
    let mut report = Vec::new();
    for file in files.iter().filter(|f| !is_test_file(f)) {
        let text = std::fs::read_to_string(file).unwrap();
        for (line, token, reason) in violations(&text) {
            report.push(format!("{}:{line}: `{token}`: {reason}", file.display()));
        }
    }
    assert!(report.is_empty(), "the sans-IO rule is broken:\n{}", report.join("\n"));
}

#[test]
fn the_scan_finds_what_it_forbids() {
    let text =
        "fn f() {\n    // Instant::now in a comment is fine\n    let t = Instant::now();\n}\n\
                #[cfg(test)]\nmod tests { fn g() { std::thread::sleep(d); } }\n";
    let found = violations(text);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, 3);
    assert_eq!(found[0].1, "Instant::now");
    assert_eq!(violations("let s = tokio::net::UdpSocket::bind(a);").len(), 2);
}
