#!/usr/bin/env bash
# `cdrvault serve` throughput against the broker's raw delivery rate,
# measured in the same run on the same topic:
#   benches/serve.sh [N_RECORDS]      (default 2,000,000)
#
# 1. starts a tansu broker (memory storage) on 127.0.0.1 (scripts/setup.sh
#    installs it) and produces N synthetic CDRs (JSON Lines, one per message,
#    events of the last two days as a live feed has) to a 2-partition topic;
# 2. a plain rdkafka consumer (crates/cdrvault-serve/examples/kafka_bench.rs)
#    reads the whole topic: the raw delivery rate;
# 3. `cdrvault serve` (release build) consumes the same topic as a consumer
#    group: decode, validate, pseudonymise, seal, Parquet, fsync + rename,
#    commit. Its rate is timed from its first consumed message until every
#    record is stored (read from its /metrics);
# and prints both rates and the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000000}
PARTITIONS=${PARTITIONS:-2}
WORK=${BENCH_DIR:-target/bench-serve}
rm -rf "$WORK"; mkdir -p "$WORK"

bash scripts/setup.sh >/dev/null
PY=.venv/bin/python
cargo build --release -q -p cdrvault
cargo build --release -q -p cdrvault-serve --example kafka_bench
BIN=target/release/cdrvault
TOOL=target/release/examples/kafka_bench

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
MPORT=$(free_port)
BROKER=127.0.0.1:$PORT
.venv/bin/tansu broker --listener-url "tcp://$BROKER" --advertised-listener-url "tcp://$BROKER" \
  --storage-engine memory://tansu/ >"$WORK/tansu.log" 2>&1 &
TANSU=$!
SERVE=
cleanup() { [ -n "$SERVE" ] && kill -9 "$SERVE" 2>/dev/null; kill -9 "$TANSU" 2>/dev/null; true; }
trap cleanup EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
.venv/bin/tansu topic create cdr --partitions "$PARTITIONS" --broker "tcp://$BROKER" >/dev/null
.venv/bin/tansu topic create cdr-deadletter --partitions 1 --broker "tcp://$BROKER" >/dev/null

echo "generating and producing $N records..."
START=$(date -u -d '2 days ago' +%F)
$BIN generate --count "$N" --start "$START" --days 2 --seed 7 --format jsonl --out "$WORK/cdrs.jsonl"
$TOOL produce "$BROKER" cdr "$PARTITIONS" < "$WORK/cdrs.jsonl"

RAW=$($TOOL consume "$BROKER" cdr "$PARTITIONS" "$N")
echo "$RAW"
RAW_RATE=$(echo "$RAW" | sed -E 's/.*\(([0-9]+)\/s\).*/\1/')

export CDRVAULT__STORAGE__DATA_DIR="$WORK/data"
export CDRVAULT__KEYS__STORE_DIR="$WORK/keys"
export CDRVAULT__KEYS__MASTER_KEY_FILE="$WORK/master.key"
export CDRVAULT__KAFKA__BROKERS="$BROKER"
export CDRVAULT__KAFKA__TOPICS='["cdr"]'
export CDRVAULT__KAFKA__GROUP_ID=bench
export CDRVAULT__KAFKA__METRICS_ADDRESS="127.0.0.1:$MPORT"
$BIN keys init >/dev/null
# Batches flush at 500,000 records or 128 MiB (the defaults); a short
# max age keeps the last partial batch from waiting the default 5 s.
export CDRVAULT__KAFKA__MAX_BATCH_AGE_MS=${MAX_BATCH_AGE_MS:-500}
$BIN -v serve 2>"$WORK/serve.log" &
SERVE=$!
# Poll /metrics: time from the first consumed message to N records processed.
"$PY" - "$MPORT" "$N" <<'PY' | tee "$WORK/serve-rate.txt"
import sys, time, urllib.request
port, n = sys.argv[1], int(sys.argv[2])
def m():
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except Exception:
        return {}
    return {l.split()[0]: float(l.split()[1]) for l in body.splitlines() if l and not l.startswith("#")}
deadline = time.time() + 1800
while m().get("cdrvault_messages_consumed_total", 0) == 0:
    if time.time() > deadline: sys.exit("serve consumed nothing")
    time.sleep(0.01)
t0 = time.time()
while True:
    v = m()
    if v.get("cdrvault_records_consumed_total", 0) >= n: break
    if time.time() > deadline: sys.exit("serve did not finish")
    time.sleep(0.02)
dt = time.time() - t0
stored = sum(x for k, x in v.items() if k.startswith("cdrvault_records_stored_total"))
print(f"cdrvault serve: {n} records ({int(stored)} stored, {int(v.get('cdrvault_records_dead_lettered_total', 0))} dead-lettered, {int(v.get('cdrvault_files_published_total', 0))} files) in {dt:.2f} s ({n/dt:.0f}/s)")
PY
echo "cdrvault serve peak RSS: $(awk '/VmHWM/ {print int($2/1024)}' "/proc/$SERVE/status") MiB"
echo "batch times (ms): $(sed 's/\x1b\[[0-9;]*m//g' "$WORK/serve.log" | grep -o 'records=[0-9]* stored=[0-9]* partitions=[0-9]* elapsed_ms=[0-9]*' | sed -E 's/records=([0-9]*).*elapsed_ms=([0-9]*)/\1:\2/' | tr '\n' ' ' || true)"
kill -TERM "$SERVE"; if wait "$SERVE"; then echo "serve drained and exited 0"; else echo "serve exited $?"; fi; SERVE=
SERVE_RATE=$(sed -E 's/.*\(([0-9]+)\/s\).*/\1/' "$WORK/serve-rate.txt")
"$PY" -c "r=$SERVE_RATE/$RAW_RATE; print(f'ratio serve/raw: {r:.2f}x (target >= 0.8x); serve {$SERVE_RATE:,} CDR/s (target >= 300,000)')"
