#!/usr/bin/env bash
# End-to-end ingest benchmark, reproducible:
#   benches/ingest.sh [N_RECORDS] [--days D[,D...]] [--runs R]
#     default: 1,000,000 records, --days 30,440 (a month and 15 months), 3 runs
#   CDRVAULT_BIN=target/release/cdrvault benches/ingest.sh 1000000 --days 30,440
#
# For each spread D:
# 1. generates N synthetic CDRs (CSV, fictional numbers, varied spellings)
#    over D days (D <= 30: ending 10 days ago; longer: starting 2025-09-15,
#    so part of the input is past its retention period on arrival);
# 2. R times, alternating: `cdrvault ingest` (release build) into an empty
#    data directory and key store (so every run pays for creating its
#    period keys: decode, normalise, classify, 6 AES-CMAC pseudonyms + 1
#    AES-256-GCM seal per record, Parquet partitions by class and date with
#    bloom filters, fsync + rename), then DuckDB on the same CSV doing less
#    work (salted SHA-256 of caller, callee and IMEI, Parquet partitioned by
#    class and date, no encryption, no validation);
# and prints, per spread, the median time and throughput of each, the
# ratio of the medians (and of each run), files and partitions written and
# cdrvault's peak RSS (median; /usr/bin/time).
set -euo pipefail
cd "$(dirname "$0")/.."
N=1000000
DAYS=30,440
RUNS=3
while [ $# -gt 0 ]; do
  case "$1" in
    --days) DAYS=$2; shift 2 ;;
    --days=*) DAYS=${1#--days=}; shift ;;
    --runs) RUNS=$2; shift 2 ;;
    *) N=$1; shift ;;
  esac
done
WORK=${BENCH_DIR:-target/bench-ingest}
rm -rf "$WORK"; mkdir -p "$WORK"

bash scripts/setup.sh >/dev/null
PY=.venv/bin/python
# CDRVAULT_BIN=<path> uses an already built binary.
if [ -z "${CDRVAULT_BIN:-}" ]; then
  cargo build --release -p cdrvault -q
fi
BIN=${CDRVAULT_BIN:-target/release/cdrvault}
TIME=""
if [ -x /usr/bin/time ]; then TIME=/usr/bin/time; fi

now() { date +%s.%N; }

REPORT="$WORK/report.txt"
: > "$REPORT"
for D in ${DAYS//,/ }; do
  DIR="$WORK/days-$D"
  mkdir -p "$DIR"
  if [ "$D" -le 30 ]; then
    START=$(date -u -d "$((D + 10)) days ago" +%F)
  else
    START=2025-09-15
  fi
  echo "generating $N records over $D days from $START..."
  $BIN generate --count "$N" --start "$START" --days "$D" --seed 7 --out "$DIR/cdrs.csv"
  sync
  export CDRVAULT__STORAGE__DATA_DIR="$DIR/data"
  export CDRVAULT__KEYS__STORE_DIR="$DIR/keys"
  export CDRVAULT__KEYS__MASTER_KEY_FILE="$DIR/master.key"
  export CDRVAULT__INGEST__DEAD_LETTER_DIR="$DIR/deadletter"
  CDR_T=(); DUCK_T=(); RSS=()
  for r in $(seq 1 "$RUNS"); do
    rm -rf "$DIR/data" "$DIR/keys" "$DIR/master.key" "$DIR/deadletter" "$DIR/duckdb-out"
    $BIN keys init >/dev/null
    sync
    t0=$(now)
    if [ -n "$TIME" ]; then
      $TIME -f '%M' -o "$DIR/rss.txt" $BIN ingest "$DIR/cdrs.csv" --format json --no-progress > "$DIR/summary.json"
      RSS+=("$(tail -n 1 "$DIR/rss.txt")")
    else
      $BIN ingest "$DIR/cdrs.csv" --format json --no-progress > "$DIR/summary.json"
      RSS+=(0)
    fi
    t1=$(now)
    CDR_T+=("$($PY -c "print($t1 - $t0)")")
    sync
    t0=$(now)
    $PY - "$DIR" <<'PYEOF'
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
    t1=$(now)
    DUCK_T+=("$($PY -c "print($t1 - $t0)")")
    echo "  run $r: cdrvault ${CDR_T[-1]} s (RSS ${RSS[-1]} KiB), duckdb ${DUCK_T[-1]} s"
  done
  STORED=$($PY -c "import json; s=json.load(open('$DIR/summary.json')); print(s['stored'], s['rejected'], s['dropped_expired'], s['dropped_duplicate'], s['reconciles'])")
  FILES=$(find "$DIR/data" -name 'part-*.parquet' | wc -l)
  PARTS=$(find "$DIR/data" -mindepth 2 -maxdepth 2 -name 'date=*' -type d | wc -l)
  $PY - "$N" "$D" "$STORED" "$FILES" "$PARTS" "${CDR_T[*]}" "${DUCK_T[*]}" "${RSS[*]}" <<'PYEOF' | tee -a "$REPORT"
import statistics, sys
n, d, stored, files, parts = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
cdr = [float(x) for x in sys.argv[6].split()]
duck = [float(x) for x in sys.argv[7].split()]
rss = [int(x) for x in sys.argv[8].split()]
mc, md = statistics.median(cdr), statistics.median(duck)
print(f"\n== {n} records over {d} days (stored rejected expired duplicate reconciles: {stored})")
print(f"files written:         {files} in {parts} partitions")
print(f"cdrvault ingest:       {mc:8.2f} s  {n / mc:12.0f} records/s  (median of {len(cdr)}; peak RSS median {statistics.median(rss):.0f} KiB, max {max(rss)} KiB)")
print(f"duckdb (less work):    {md:8.2f} s  {n / md:12.0f} records/s  (median of {len(duck)})")
print(f"ratio cdrvault/duckdb: {md / mc:.2f}x  (per run: {', '.join(f'{b / a:.2f}' for a, b in zip(cdr, duck))})")
PYEOF
done
printf '\nload (uptime): %s\n' "$(uptime | sed 's/.*load/load/')" | tee -a "$REPORT"
