//! `trunkguard-bench media` end to end with a tiny duration: the output is `name: number`
//! lines (comments start with `#`), every expected figure is there and plausible. No timing
//! assertions.

use std::collections::HashMap;
use std::process::Command;

const FIGURES: [&str; 7] = [
    "codec_ceiling_calls_per_core",
    "pipeline_calls_per_core",
    "pipeline_vs_ceiling",
    "bytes_per_call",
    "engine_latency_p50_ms",
    "engine_latency_p99_ms",
    "calls_at_80_percent",
];

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_trunkguard-bench"))
        .arg("media")
        .args(args)
        .output()
        .expect("run trunkguard-bench")
}

/// Every non-comment line as `name: number`.
fn figures(stdout: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in stdout.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')) {
        let (name, value) =
            line.split_once(": ").unwrap_or_else(|| panic!("not `name: number`: {line:?}"));
        assert!(
            name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{line:?}"
        );
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a number: {line:?}"));
        assert!(value.is_finite() && value >= 0.0, "{line:?}");
        assert!(out.insert(name.to_owned(), value).is_none(), "duplicate {name}");
    }
    out
}

#[test]
fn bench_media_pcmu_prints_every_figure_as_name_number() {
    let out = bench(&["--seconds", "1", "--codec", "pcmu"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.lines().next().is_some_and(|l| l.starts_with('#') && l.contains("pcmu")),
        "{stdout}"
    );
    let f = figures(&stdout);
    let names: Vec<&str> = FIGURES.to_vec();
    let mut got: Vec<&str> = f.keys().map(String::as_str).collect();
    got.sort_unstable();
    let mut want = names.clone();
    want.sort_unstable();
    assert_eq!(got, want, "{stdout}");
    for name in [
        "codec_ceiling_calls_per_core",
        "pipeline_calls_per_core",
        "pipeline_vs_ceiling",
        "calls_at_80_percent",
    ] {
        assert!(f[name] > 0.0, "{name}: {stdout}");
    }
    // the counting allocator is installed in the binary: a G.711 call holds some heap
    assert!(f["bytes_per_call"] > 1000.0, "{stdout}");
    assert!(f["engine_latency_p99_ms"] >= f["engine_latency_p50_ms"], "{stdout}");
}

#[test]
fn bench_media_rejects_bad_arguments_with_usage_errors() {
    for args in
        [&["--seconds", "0"][..], &["--seconds", "x"], &["--codec", "g729"], &["--calls", "0"]]
    {
        let out = bench(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
