#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 60), seeded from tests/data, the RFC
# 4475/5118 corpus (../shared/conformance when present) and fuzz/seeds. Exits non-zero when a
# target crashes (the reproducer is in fuzz/artifacts/<target>/). Usage:
#   fuzz/run.sh [SECONDS] [TARGET...]
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`) and a nightly toolchain, or a stable one
# with RUSTC_BOOTSTRAP=1 (set here when rustc is not nightly). See docs/fuzzing.md.
set -euo pipefail

seconds="${1:-60}"
shift || true
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
cd "$here"

if ! rustc --version | grep -q nightly; then
    export RUSTC_BOOTSTRAP=1
fi
# No sanitizer by default: the crate is safe Rust, and panics/aborts/timeouts/OOM are what we
# look for; FUZZ_SANITIZER=address for an ASan build (slower to build and run).
sanitizer="${FUZZ_SANITIZER:-none}"
# Extra libFuzzer flags, e.g. FUZZ_FLAGS="-fork=2" for a long run on two cores.
read -r -a extra <<<"${FUZZ_FLAGS:-}"

all=(sip_parse sip_transaction stream_framer sdp rtp_jitter rtcp agent_twilio agent_openai config
    http_bodies)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all[@]}")

shared=""
for candidate in "${TRUNKGUARD_SHARED:-}" "$root/../shared" /work/shared; do
    if [ -n "$candidate" ] && [ -d "$candidate/conformance" ]; then
        shared="$candidate/conformance"
        break
    fi
done

seed() {
    local target="$1" dir="corpus/$1"
    mkdir -p "$dir"
    local sip=("$root"/tests/data/rfc4475/*.dat "$root"/tests/data/rfc5118/*.dat)
    if [ -n "$shared" ]; then
        sip+=("$shared"/rfc4475/*.dat "$shared"/rfc5118/*.dat)
    fi
    case "$target" in
        sip_parse | sip_transaction | stream_framer) cp -n "${sip[@]}" "$dir"/ 2>/dev/null || true ;;
        config)
            cp -n "$root"/firmware/etc/trunkguard/trunkguard.toml "$dir"/ 2>/dev/null || true
            ;;
    esac
    if [ -d "seeds/$target" ]; then
        cp -n seeds/"$target"/* "$dir"/ 2>/dev/null || true
    fi
}

cargo fuzz build -s "$sanitizer"
failed=()
for target in "${targets[@]}"; do
    seed "$target"
    echo "== $target: ${seconds}s"
    if ! cargo fuzz run -s "$sanitizer" "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -max_len=65536 \
        -print_final_stats=1 "${extra[@]}" 2>"corpus/$target.log"; then
        failed+=("$target")
        echo "!! $target crashed: see fuzz/artifacts/$target/ and fuzz/corpus/$target.log"
        tail -n 40 "corpus/$target.log"
    else
        grep -E "^stat::number_of_executed_units|^Done" "corpus/$target.log" || true
    fi
done
if [ ${#failed[@]} -ne 0 ]; then
    echo "fuzz: crashes in ${failed[*]}"
    exit 1
fi
echo "fuzz: ${#targets[@]} targets, ${seconds}s each, no crash"
