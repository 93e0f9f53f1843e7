#!/usr/bin/env bash
# The whole test suite: setup, build, lints, every test. `.ci/run` calls this.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
export CDRVAULT_PYTHON="$PWD/.venv/bin/python"

cargo fmt --all -- --check
# The end-to-end tests drive the real binary: build it first, in the same
# invocation as the tests so that features unify and nothing builds twice.
cargo build --workspace --bins --tests
cargo clippy --workspace --all-targets -- -D warnings
# Every public item of the libraries is documented and every intra-doc link
# resolves (the missing_docs and rustdoc lints of [workspace.lints]). The
# binary's doc comments are its --help text, not rustdoc: --lib.
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --lib
cargo test --workspace --no-fail-fast 2>&1 | tee target/test-output.txt
# One closing line for the whole suite.
awk '/^test result:/ { p += $4; f += $6 } END { printf "workspace: %d passed, %d failed\n", p, f; exit (f > 0) }' target/test-output.txt
