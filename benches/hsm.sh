#!/usr/bin/env bash
# Ingest with the master key in a PKCS#11 token (SoftHSM2) against the file
# provider, on the same 30-day input, in the same run:
#   benches/hsm.sh [N_RECORDS] [ROUNDS]      (defaults 5,000,000 and 3)
#
# Each round ingests the input once into a fresh store keyed by a master key
# file and once into a fresh store keyed by a token key (alternating, so
# drift of the machine affects both); the best time of each is reported and
# the ratio pkcs11/file (target: at most 1.05). The token is created in a
# temporary SOFTHSM2_CONF directory with random PINs. Run it on an idle
# machine: the figures mean nothing while other work competes for the cores.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-5000000}
ROUNDS=${2:-3}
WORK=${BENCH_DIR:-target/bench-hsm}
rm -rf "$WORK"; mkdir -p "$WORK"

bash scripts/setup.sh >/dev/null
PY=.venv/bin/python
# CDRVAULT_BIN=<binary> skips the release build (e.g. to check the script).
BIN=${CDRVAULT_BIN:-target/release/cdrvault}
[ -n "${CDRVAULT_BIN:-}" ] || cargo build --release -p cdrvault -q
MODULE=${CDRVAULT_PKCS11_MODULE:-$(ls /usr/lib/softhsm/libsofthsm2.so /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so 2>/dev/null | head -1)}

echo "generating $N records over 30 days..."
START=$(date -u -d '40 days ago' +%F)
$BIN generate --count "$N" --start "$START" --days 30 --seed 7 --out "$WORK/cdrs.csv"

mkdir -p "$WORK/tokens"
export SOFTHSM2_CONF="$WORK/softhsm2.conf"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$PWD/$WORK/tokens" > "$SOFTHSM2_CONF"
export CDRVAULT_BENCH_PIN=$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
softhsm2-util --init-token --free --label cdrvault-bench \
  --so-pin "$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')" --pin "$CDRVAULT_BENCH_PIN" >/dev/null

export CDRVAULT__INGEST__DEAD_LETTER_DIR="$WORK/deadletter"
export CDRVAULT__KEYS__PKCS11__MODULE="$MODULE"
export CDRVAULT__KEYS__PKCS11__TOKEN_LABEL=cdrvault-bench
export CDRVAULT__KEYS__PKCS11__PIN_ENV=CDRVAULT_BENCH_PIN
unset CDRVAULT_MASTER_KEY

# run <provider> <round>: prints the seconds of one ingest into a fresh store.
run() {
  local p=$1 r=$2 d="$WORK/$1-$2"
  mkdir -p "$d"
  export CDRVAULT__STORAGE__DATA_DIR="$d/data" CDRVAULT__KEYS__STORE_DIR="$d/keys"
  export CDRVAULT__KEYS__MASTER_KEY_FILE="$d/master.key" CDRVAULT__KEYS__PROVIDER=$p
  export CDRVAULT__KEYS__PKCS11__KEY_LABEL="bench-$r"
  $BIN keys init --provider "$p" >/dev/null
  sync
  local t0 t1
  t0=$(date +%s.%N)
  $BIN ingest "$WORK/cdrs.csv" --no-progress --format json > "$d/summary.json"
  t1=$(date +%s.%N)
  rm -rf "$d/data"
  $PY -c "print($t1 - $t0)"
}

best_file=; best_hsm=
for r in $(seq 1 "$ROUNDS"); do
  f=$(run file "$r"); h=$(run pkcs11 "$r")
  printf 'round %d: file %.2f s, pkcs11 %.2f s\n' "$r" "$f" "$h"
  best_file=$($PY -c "print(min(x for x in [$f, ${best_file:-$f}]))")
  best_hsm=$($PY -c "print(min(x for x in [$h, ${best_hsm:-$h}]))")
done
printf '\nrecords: %d, best of %d rounds\n' "$N" "$ROUNDS"
printf 'file provider:   %8.2f s  %12.0f records/s\n' "$best_file" "$($PY -c "print($N / $best_file)")"
printf 'pkcs11 provider: %8.2f s  %12.0f records/s\n' "$best_hsm" "$($PY -c "print($N / $best_hsm)")"
printf 'ratio pkcs11/file time: %.3f (target <= 1.05)\n' "$($PY -c "print($best_hsm / $best_file)")"
