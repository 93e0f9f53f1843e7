#!/usr/bin/env bash
# Lookup benchmark, reproducible:
#   benches/lookup.sh [N_RECORDS]      (default 100,000,000)
#   CDRVAULT_BIN=target/release/cdrvault benches/lookup.sh 10000000
#                                      (10M: a before/after comparison that
#                                      builds in minutes; the store is
#                                      kept in target/bench-lookup-<N>)
#
# 1. builds a store of N synthetic CDRs over the last 91 days (3 months) with
#    10,000,000 subscribers: one `cdrvault generate` per day, piped in date
#    order into one release `cdrvault ingest -` (as a live feed arrives), so
#    nothing but the store itself is written to disk. The store is kept and
#    reused by later runs with the same N (BENCH_DIR, default
#    target/bench-lookup-<N>);
# 2. times `cdrvault request execute` (the whole command: config, key store,
#    access log under its lock, lookup of one number as caller or callee over
#    the full 3-month window, decryption, CSV + JSON output with SHA-256,
#    the executed entry), warm: one warm-up, then the median of 5 runs, each
#    on a fresh approved request;
# 3. runs DuckDB on the same Parquet files for the same number: the same
#    window (Hive date pruning) and the same per-day pseudonyms (printed by
#    `cargo run --release --example pseudonyms`, which needs the key store),
#    matching caller_p or callee_p, warm (second run in one connection);
# and prints both latencies and the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000000}
DAYS=91
SUBSCRIBERS=10000000
WORK=${BENCH_DIR:-target/bench-lookup-$N}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)

bash scripts/setup.sh >/dev/null
PY=$PWD/.venv/bin/python
BENCH_BIN=${BENCH_BIN:-${CDRVAULT_BIN:-}}
if [ -z "${BENCH_BIN:-}" ]; then
  cargo build --release -p cdrvault -q
  BIN=$PWD/target/release/cdrvault
else
  BIN=$BENCH_BIN
fi

export CDRVAULT__STORAGE__DATA_DIR="$WORK/data"
export CDRVAULT__KEYS__STORE_DIR="$WORK/keys"
export CDRVAULT__KEYS__MASTER_KEY_FILE="$WORK/master.key"
export CDRVAULT__INGEST__DEAD_LETTER_DIR="$WORK/deadletter"

FIRST=$(date -u -d "$DAYS days ago" +%F)
LAST=$(date -u -d "1 day ago" +%F)
if [ ! -f "$WORK/store.done" ]; then
  rm -rf "$WORK/data" "$WORK/keys" "$WORK/master.key" "$WORK/deadletter" "$WORK/audit" "$WORK/out" "$WORK/operators.done"
  $BIN keys init >/dev/null
  PER_DAY=$(( (N + DAYS - 1) / DAYS ))
  echo "building a store of $N records ($PER_DAY per day, $FIRST..$LAST, $SUBSCRIBERS subscribers)..."
  t0=$(date +%s)
  {
    $BIN generate --count 0 --canonical-numbers
    for i in $(seq 0 $((DAYS - 1))); do
      D=$(date -u -d "$FIRST + $i days" +%F)
      $BIN generate --count "$PER_DAY" --start "$D" --days 1 --seed $((i + 1)) \
        --subscribers "$SUBSCRIBERS" --canonical-numbers | tail -n +2
    done
  } | $BIN ingest - --input-format csv --no-progress --format json > "$WORK/ingest.json"
  t1=$(date +%s)
  echo "store built in $((t1 - t0)) s: $(du -sh "$WORK/data" | cut -f1)"
  echo "$FIRST $LAST" > "$WORK/store.done"
fi
read -r FIRST LAST < "$WORK/store.done"
if [ -n "${BENCH_BUILD_ONLY:-}" ]; then exit 0; fi
export CDRVAULT__AUDIT__LOG_FILE="$WORK/audit/access.log"
export CDRVAULT__AUDIT__HEAD_FILE="$WORK/keys/audit-head.json"
export CDRVAULT__LOOKUP__OUTPUT_DIR="$WORK/out"
# Operators sign with SSH keys registered in the access log (once per store).
OPS="$WORK/operators"
mkdir -p "$OPS"
for who in bench_admin bench_req bench_app; do
  [ -f "$OPS/$who" ] || ssh-keygen -q -t ed25519 -N '' -C "$who" -f "$OPS/$who"
done
export CDRVAULT__IDENTITY__BOOTSTRAP_ADMIN__NAME=bench_admin
export CDRVAULT__IDENTITY__BOOTSTRAP_ADMIN__PUBLIC_KEY="$(cat "$OPS/bench_admin.pub")"
if [ ! -f "$WORK/operators.done" ]; then
  ADMIN=(--operator bench_admin --key "$OPS/bench_admin")
  $BIN operator register "${ADMIN[@]}" >/dev/null
  $BIN operator register "${ADMIN[@]}" --name bench_req --role requester --public-key-file "$OPS/bench_req.pub" >/dev/null
  $BIN operator register "${ADMIN[@]}" --name bench_app --role approver --public-key-file "$OPS/bench_app.pub" >/dev/null
  touch "$WORK/operators.done"
fi

# The number: subscriber 1,234,567 (fictional, 010-0123-4567).
TARGET=+821001234567
FROM="$FIRST"
TO="$LAST"

RUN=$(date +%s)
times=()
for i in 0 1 2 3 4 5; do
  ID="KR-BENCH-$RUN-$i"
  $BIN request create --operator bench_req --key "$OPS/bench_req" --id "$ID" --authority "bench" --warrant "bench-$i" \
    --target "msisdn:$TARGET" --from "$FROM" --to "$TO" >/dev/null
  $BIN request approve --operator bench_app --key "$OPS/bench_app" "$ID" >/dev/null
  t0=$(date +%s.%N)
  $BIN request execute --operator bench_req --key "$OPS/bench_req" "$ID" --no-progress --format json > "$WORK/execute-$i.json"
  t1=$(date +%s.%N)
  if [ "$i" -gt 0 ]; then times+=("$($PY -c "print(($t1 - $t0) * 1000)")"); fi
done
CDR_MS=$($PY -c "import statistics,sys; print(statistics.median(map(float, sys.argv[1:])))" "${times[@]}")
ROWS=$($PY -c "import json; d=json.load(open('$WORK/execute-5.json')); print(d['rows'], d['stats'])")

cargo run --release -q -p cdrvault-e2e --example pseudonyms -- "$WORK/keys" "$WORK/master.key" "$TARGET" "$FROM" "$TO" > "$WORK/pseudonyms.txt"
DUCK=$($PY - "$WORK" "$FROM" "$TO" <<'PYEOF'
import sys, time, duckdb
work, d_from, d_to = sys.argv[1:4]
ps = [l.split()[2] for l in open(f"{work}/pseudonyms.txt") if l.strip()]
lst = ", ".join(f"unhex('{p}')" for p in ps)
con = duckdb.connect()
q = f"""
SELECT record_id, seal_ctx, sealed
FROM read_parquet('{work}/data/*/*/*.parquet', hive_partitioning = true)
WHERE date BETWEEN DATE '{d_from}' AND DATE '{d_to}'
  AND (caller_p IN ({lst}) OR callee_p IN ({lst}))
"""
t0 = time.perf_counter(); cold = con.execute(q).fetchall(); t1 = time.perf_counter()
runs = []
for _ in range(3):
    t2 = time.perf_counter(); warm = con.execute(q).fetchall(); runs.append(time.perf_counter() - t2)
runs.sort()
print(f"{runs[1] * 1000:.1f} {(t1 - t0) * 1000:.1f} {len(warm)}")
PYEOF
)
read -r DUCK_MS DUCK_COLD_MS DUCK_ROWS <<< "$DUCK"

FILES=$(find "$WORK/data" -name 'part-*.parquet' | wc -l)
printf '\nstore:                 %d records, %s..%s, %s in %d files\n' "$N" "$FROM" "$TO" "$(du -sh "$WORK/data" | cut -f1)" "$FILES"
printf 'cdrvault execute:      %8.1f ms warm (median of 5; whole command incl. access log + output)  rows/stats: %s\n' "$CDR_MS" "$ROWS"
printf 'duckdb same query:     %8.1f ms warm (median of 3; first run %s ms)  rows: %s\n' "$DUCK_MS" "$DUCK_COLD_MS" "$DUCK_ROWS"
printf 'ratio duckdb/cdrvault: %.1fx\n' "$($PY -c "print($DUCK_MS / $CDR_MS)")"
