#!/usr/bin/env bash
# End-to-end ingest benchmark, reproducible:
#   benches/ingest.sh [N_RECORDS]      (default 5,000,000)
#
# 1. generates N synthetic CDRs (CSV, fictional numbers, varied spellings);
# 2. runs `cdrvault ingest` (release build): decode, normalise, classify,
#    6 HMAC pseudonyms + 1 AES-256-GCM seal per record, Parquet partitions by
#    class and date with bloom filters, fsync + rename;
# 3. runs DuckDB on the same CSV doing less work: salted SHA-256 of caller,
#    callee and IMEI, Parquet partitioned by class and date, no encryption,
#    no validation;
# and prints both throughputs and the ratio, measured in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-5000000}
WORK=${BENCH_DIR:-target/bench-ingest}
rm -rf "$WORK"; mkdir -p "$WORK"

bash scripts/setup.sh >/dev/null
PY=.venv/bin/python
cargo build --release -p cdrvault -q
BIN=target/release/cdrvault

echo "generating $N records..."
START=$(date -u -d '40 days ago' +%F)
$BIN generate --count "$N" --start "$START" --days 30 --seed 7 --out "$WORK/cdrs.csv"
SIZE=$(stat -c %s "$WORK/cdrs.csv")
echo "input: $WORK/cdrs.csv, $((SIZE / 1048576)) MiB"
sync

export CDRVAULT__STORAGE__DATA_DIR="$WORK/data"
export CDRVAULT__KEYS__STORE_DIR="$WORK/keys"
export CDRVAULT__KEYS__MASTER_KEY_FILE="$WORK/master.key"
export CDRVAULT__INGEST__DEAD_LETTER_DIR="$WORK/deadletter"
$BIN keys init >/dev/null

t0=$(date +%s.%N)
if [ -x /usr/bin/time ]; then
  /usr/bin/time -f '%M' -o "$WORK/rss.txt" $BIN ingest "$WORK/cdrs.csv" --format json --no-progress > "$WORK/summary.json"
else
  $BIN ingest "$WORK/cdrs.csv" --format json --no-progress > "$WORK/summary.json"
fi
t1=$(date +%s.%N)
CDR_S=$($PY -c "print($t1 - $t0)")

t0=$(date +%s.%N)
$PY - "$WORK" <<'PYEOF'
import sys, duckdb
work = sys.argv[1]
con = duckdb.connect()
con.execute(f"""
COPY (
  SELECT record_id,
         sha256('bench-salt' || caller) AS caller_h,
         sha256('bench-salt' || coalesce(callee, '')) AS callee_h,
         sha256('bench-salt' || coalesce(imei, '')) AS imei_h,
         start_time, end_time, duration_s, usage_count, service,
         CASE WHEN record_type = 'internet' OR service = 'data' THEN 'internet'
              WHEN record_type LIKE 'fixed%' THEN 'fixed' ELSE 'mobile' END AS class,
         substr(start_time, 1, 10) AS date
  FROM read_csv('{work}/cdrs.csv', header = true, all_varchar = true)
) TO '{work}/duckdb-out' (FORMAT parquet, PARTITION_BY (class, date))
""")
PYEOF
t1=$(date +%s.%N)
DUCK_S=$($PY -c "print($t1 - $t0)")

STORED=$($PY -c "import json,sys; s=json.load(open('$WORK/summary.json')); print(s['stored'], s['rejected'], s['dropped_duplicate'], s['reconciles'])")
RSS=$(cat "$WORK/rss.txt" 2>/dev/null || echo "?")
printf '\nrecords:            %d (stored, rejected, duplicate, reconciles: %s)\n' "$N" "$STORED"
printf 'cdrvault ingest:    %8.2f s  %12.0f records/s  (peak RSS %s KiB)\n' "$CDR_S" "$($PY -c "print($N / $CDR_S)")" "$RSS"
printf 'duckdb (less work): %8.2f s  %12.0f records/s\n' "$DUCK_S" "$($PY -c "print($N / $DUCK_S)")"
printf 'ratio cdrvault/duckdb: %.2fx\n' "$($PY -c "print($DUCK_S / $CDR_S)")"
