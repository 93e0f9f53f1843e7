#!/usr/bin/env bash
# BER ingest against CSV ingest of the same records, in one run.
#
# Generates N TS 32.298 records in a TS 32.297 file with the independent
# fixture generator (tests/fixtures/gen_3gpp_ber.py, Python asn1tools), writes
# the same records as CSV from its ground truth, and times `cdrvault ingest`
# on each (fresh data/key directories, same binary, same settings). Reports
# records/s of both and the ratio BER/CSV.
#
# Usage: benches/ingest_ber.sh [N]   (default 100000)
# CDRVAULT_BIN selects the binary (default target/release/cdrvault; build it
# with `cargo build --release -p cdrvault`). Run scripts/setup.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}
BIN=${CDRVAULT_BIN:-target/release/cdrvault}
PY=.venv/bin/python
[ -x "$BIN" ] || { echo "no $BIN: cargo build --release -p cdrvault" >&2; exit 1; }
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
"$PY" tests/fixtures/gen_3gpp_ber.py "$W" --records "$N" --days 60
"$PY" - "$W" <<'PYEOF'
import csv, datetime as dt, json, sys
w = sys.argv[1]
cols = ["record_id", "record_type", "caller", "callee", "imsi", "imei", "start_time",
        "end_time", "duration_s", "usage_count", "cell_id", "service", "ip"]
def iso(us):
    return dt.datetime.fromtimestamp(us / 1e6, dt.timezone.utc).isoformat()
with open(f"{w}/truth.jsonl") as f, open(f"{w}/same.csv", "w", newline="") as out:
    o = csv.writer(out)
    o.writerow(cols)
    for line in f:
        t = json.loads(line)
        row = dict(t, record_id=f"csv-{t['index']}", start_time=iso(t["start_us"]),
                   end_time=iso(t["end_us"]))
        o.writerow(["" if row.get(c) is None else row[c] for c in cols])
PYEOF
run() {
  local name=$1; shift
  rm -rf "$W/run"; mkdir -p "$W/run"
  CDRVAULT__STORAGE__DATA_DIR="$W/run/data" CDRVAULT__KEYS__STORE_DIR="$W/run/keys" \
  CDRVAULT__KEYS__MASTER_KEY_FILE="$W/run/master.key" \
  CDRVAULT__INGEST__DEAD_LETTER_DIR="$W/run/dl" \
    "$BIN" ingest --format json "$@" 2>/dev/null > "$W/$name.json"
  "$PY" -c "import json,sys; s=json.load(open(sys.argv[1])); print(f\"$name: {s['records']} records, {s['stored']} stored, {s['elapsed_s']:.2f} s, {s['records_per_s']:.0f} records/s\")" "$W/$name.json"
}
run csv "$W/same.csv"
run ber --input-format 3gpp-ber "$W/good.ber"
"$PY" -c "import json,sys; c=json.load(open(sys.argv[1])); b=json.load(open(sys.argv[2])); print(f'ratio BER/CSV: {b[\"records_per_s\"]/c[\"records_per_s\"]:.2f}')" "$W/csv.json" "$W/ber.json"
