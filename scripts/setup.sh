#!/usr/bin/env bash
# Installs what the test suite and benchmarks need beyond the Rust toolchain,
# on a fresh machine: a Python virtualenv with DuckDB and PyArrow (Parquet
# interop checks, the DuckDB baseline of benches/ingest.sh).
# Idempotent; safe to run on every test run.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import duckdb, pyarrow' 2>/dev/null; then
  "$VENV/bin/pip" install --quiet --disable-pip-version-check 'duckdb>=1.1' 'pyarrow>=17'
fi
"$VENV/bin/python" -c 'import duckdb, pyarrow; print(f"setup: duckdb {duckdb.__version__}, pyarrow {pyarrow.__version__}")'
