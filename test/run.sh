#!/usr/bin/env bash
# Runs every creek test: C++ unit tests, pg_regress, pgTAP and the end-to-end
# tests against a real Postgres and nats-server. Installs dependencies and
# builds first; then the quick benchmark and encoder check. Ends with one line: "N passed, N failed".
#
#   bash test/run.sh            everything
#   bash test/run.sh -k nats    end-to-end tests matching a pytest expression
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=/usr/bin/python3

bash scripts/install-deps.sh || { echo "dependency installation failed"; echo "0 passed, 1 failed"; exit 1; }
bash scripts/build.sh || { echo "build failed"; echo "0 passed, 1 failed"; exit 1; }

PASSED=0
FAILED=0
add() { PASSED=$((PASSED + $1)); FAILED=$((FAILED + $2)); }
LOGDIR=$(mktemp -d /tmp/creek-test-logs.XXXXXX)
chmod 755 "$LOGDIR"

echo "== unit tests (C++, against a real nats-server)"
if make -s -C test/unit >"$LOGDIR/unit-build.log" 2>&1; then
  for t in test/unit/build/test_*; do
    out=$("$t" 2>&1); echo "$out" | grep -E "^(not ok|  FAIL)" || true
    line=$(echo "$out" | grep -E "^[0-9]+ passed, [0-9]+ failed$" | tail -1)
    if [ -n "$line" ]; then
      p=$(echo "$line" | awk '{print $1}'); f=$(echo "$line" | awk '{print $3}')
      echo "  $(basename "$t"): $line"; add "$p" "$f"
    else
      echo "  $(basename "$t"): crashed"; echo "$out" | tail -5; add 0 1
    fi
  done
else
  echo "  unit test build failed:"; tail -20 "$LOGDIR/unit-build.log"; add 0 1
fi

echo "== starting a throwaway Postgres cluster and nats-server"
STATE="$LOGDIR/servers.json"
if ! $PY test/lib/servers.py up --state "$STATE" >"$LOGDIR/servers.log" 2>&1; then
  cat "$LOGDIR/servers.log"; add 0 1
else
  PGPORT=$($PY -c "import json;print(json.load(open('$STATE'))['pg_port'])")
  export PGPORT PGHOST=127.0.0.1 PGUSER=postgres
  trap '$PY test/lib/servers.py down --state "$STATE" >/dev/null 2>&1' EXIT

  echo "== pg_regress"
  make -s installcheck PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config >"$LOGDIR/regress.log" 2>&1
  grep -E "^(test | +[a-z_]+ +\.\.\.|ok |not ok)" "$LOGDIR/regress.log" | sed 's/^/  /'
  rp=$(grep -cE "^(test|ok) .* ok " "$LOGDIR/regress.log")
  rf=$(grep -cE "^test .*FAILED" "$LOGDIR/regress.log")
  if [ "$rp" -eq 0 ] && [ "$rf" -eq 0 ]; then tail -20 "$LOGDIR/regress.log"; rf=1; fi
  [ -f regression.diffs ] && head -60 regression.diffs
  add "$rp" "$rf"

  echo "== pgTAP"
  psql -X -q -c "DROP DATABASE IF EXISTS creek_tap" -c "CREATE DATABASE creek_tap" >/dev/null 2>&1
  psql -X -q -d creek_tap -c "CREATE EXTENSION creek" -c "CREATE EXTENSION pgtap" >/dev/null
  # 02_privileges adds a table in a transaction that has written data, which
  # needs the worker's slot to exist already (a slot being created waits for
  # the transactions running then): wait for it, at most 30 s
  for _ in $(seq 300); do
    [ "$(psql -X -At -d creek_tap -c "SELECT count(*) FROM creek.pg_stat_creek WHERE datname = 'creek_tap' AND state = 'streaming'")" = 1 ] && break
    sleep 0.1
  done
  pg_prove -d creek_tap test/pgtap/*.sql >"$LOGDIR/pgtap.log" 2>&1
  sed 's/^/  /' "$LOGDIR/pgtap.log" | tail -12
  tt=$(grep -oE "Tests=[0-9]+" "$LOGDIR/pgtap.log" | grep -oE "[0-9]+" || echo 0)
  tf=$(grep -oE "Failed [0-9]+/[0-9]+ subtests" "$LOGDIR/pgtap.log" | awk -F'[ /]' '{s+=$2} END {print s+0}')
  bad=$(grep -c "Bad plan\|Dubious" "$LOGDIR/pgtap.log")
  tf=$((tf + bad)); tp=$((tt - tf)); [ "$tp" -lt 0 ] && tp=0
  if [ "$tt" -eq 0 ]; then tf=1; fi
  add "$tp" "$tf"
  $PY test/lib/servers.py down --state "$STATE" >/dev/null 2>&1
  trap - EXIT
fi

echo "== end-to-end tests (pytest)"
$PY -m pytest -q -p no:cacheprovider test/e2e "$@" 2>&1 | tee "$LOGDIR/e2e.log" | tail -40
summary=$(grep -E "^=+ .*(passed|failed|error).* in [0-9.]+s" "$LOGDIR/e2e.log" | tail -1)
[ -z "$summary" ] && summary=$(tail -1 "$LOGDIR/e2e.log")
ep=$(echo "$summary" | grep -oE "[0-9]+ passed" | grep -oE "[0-9]+" || echo 0)
ef=$(echo "$summary" | grep -oE "[0-9]+ failed" | grep -oE "[0-9]+" || echo 0)
ee=$(echo "$summary" | grep -oE "[0-9]+ error" | grep -oE "[0-9]+" || echo 0)
[ -z "$ep" ] && ep=0; [ -z "$ef" ] && ef=0; [ -z "$ee" ] && ee=0
if [ "$ep" -eq 0 ] && [ "$ef" -eq 0 ] && [ "$ee" -eq 0 ]; then ef=1; fi
add "$ep" $((ef + ee))

# The quick version of the benchmark (bench/run.sh), so that it keeps
# working; its figures are in the log, not judged here.
if [ $# -eq 0 ]; then
  echo "== benchmark, quick version (bash bench/run.sh --quick)"
  if bash bench/run.sh --quick --out "$LOGDIR/bench" >"$LOGDIR/bench.log" 2>&1 &&
     tail -1 "$LOGDIR/bench.log" | grep -q "bench quick: ok"; then
    grep -E "^target" "$LOGDIR/bench.log" | sed 's/^/  /'
    echo "  bench quick: ok"; add 1 0
  else
    tail -20 "$LOGDIR/bench.log"; add 0 1
  fi
  # creek's direct encoder against avro-c: the same bytes (checked), and the cost
  echo "== encoder cost, quick version (bash bench/encode_cost.sh --rows 20000 --rounds 1)"
  if bash bench/encode_cost.sh --rows 20000 --rounds 1 >"$LOGDIR/encode_cost.log" 2>&1; then
    sed 's/^/  /' "$LOGDIR/encode_cost.log"; add 1 0
  else
    tail -20 "$LOGDIR/encode_cost.log"; add 0 1
  fi
fi

echo "logs: $LOGDIR"
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
