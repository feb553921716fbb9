#!/usr/bin/env bash
# creek demo: installs what is needed, builds creek, starts a throwaway
# Postgres 15 cluster and a nats-server with JetStream on 127.0.0.1, publishes
# a table, writes rows for a few seconds and prints every change as it arrives
# on NATS, decoded with python3-avro. Everything is removed at the end
# (pass --keep to leave the servers running).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=/usr/bin/python3
KEEP=0
[ "${1:-}" = "--keep" ] && KEEP=1

bash scripts/install-deps.sh
bash scripts/build.sh

STATE=$(mktemp /tmp/creek-demo.XXXXXX.json)
echo "== starting Postgres (shared_preload_libraries = creek, wal_level = logical) and nats-server -js"
$PY test/lib/servers.py up --state "$STATE" >/dev/null
field() { $PY -c "import json,sys;print(json.load(open('$STATE'))['$1'])"; }
export PGHOST=127.0.0.1 PGPORT=$(field pg_port) PGUSER=postgres
NATS_URL=$(field nats_url)
cleanup() {
  if [ "$KEEP" -eq 1 ]; then
    echo "servers left running: psql -h 127.0.0.1 -p $PGPORT -U postgres demo; NATS at $NATS_URL"
    echo "stop them with: $PY test/lib/servers.py down --state $STATE"
  else
    $PY test/lib/servers.py down --state "$STATE" >/dev/null 2>&1 || true
    rm -f "$STATE"
  fi
}
trap cleanup EXIT
echo "   Postgres on port $PGPORT, NATS at $NATS_URL"

psql -X -q -c "CREATE DATABASE demo"
echo "== CREATE EXTENSION creek; creek.add_table('public.orders')"
psql -X -q -d demo <<'SQL'
CREATE EXTENSION creek;
CREATE TABLE orders (id serial PRIMARY KEY, customer text NOT NULL, amount numeric(10,2),
                     status text DEFAULT 'new', created_at timestamptz DEFAULT now());
SQL
psql -X -q -d demo -c "SELECT creek.add_table('public.orders')" >/dev/null

echo "== writing rows for 6 seconds; each change below was read back from JetStream"
$PY tools/creek_tail.py --url "$NATS_URL" --db demo --follow --seconds 10 &
TAIL=$!
for i in $(seq 1 6); do
  psql -X -q -d demo <<SQL
INSERT INTO orders (customer, amount) VALUES ('customer $i', $i * 10.5);
UPDATE orders SET status = 'paid' WHERE id = $i;
SQL
  [ $((i % 3)) -eq 0 ] && psql -X -q -d demo -c "DELETE FROM orders WHERE id = $((i - 1))"
  sleep 1
done
wait $TAIL || true

echo "== SELECT creek.snapshot('public.orders'): header, rows, EOF on the snapshot subject"
SUBJECT=$(psql -X -q -t -A -d demo -c "SELECT creek.snapshot('public.orders')")
for _ in $(seq 1 100); do
  [ "$(psql -X -q -t -A -d demo -c "SELECT state FROM creek.pg_stat_creek_snapshots WHERE subject = '$SUBJECT'")" = finished ] && break
  sleep 0.1
done
$PY tools/creek_tail.py --url "$NATS_URL" --db demo --snapshot "$SUBJECT"

echo "== creek.pg_stat_creek"
psql -X -d demo -c "SELECT datname, state, nats_state, slot_name, confirmed_lsn, messages_published, messages_in_flight, last_error FROM creek.pg_stat_creek WHERE datname = 'demo'"
