#!/usr/bin/env bash
# creek's benchmark (issue 7): JetStream and decoding ceilings, creek end to
# end, commit-to-ack latency, pgbench TPS with and without creek, and the
# worker's memory, on throwaway local servers. Writes a Markdown report, a PNG
# chart and results.json, prints a summary; the last line is
# "bench quick: ok" / "bench full: ok" when everything ran (exit status 0;
# a missed target is reported, not an error).
#
#   bash bench/run.sh                 # full run (~10-15 minutes), bench/results/
#   bash bench/run.sh --quick         # small sizes (~1-2 minutes), bench/results/quick/
#   bash bench/run.sh --perf          # also perf-record the worker during the big transactions
#   bash bench/run.sh --help          # every option (sizes, --out, --report, --phases, --pg-conf)
#
# Needs the installed creek build (scripts/build.sh), and the Debian packages
# of scripts/install-deps.sh plus gnuplot-nox (and linux-perf for --perf).
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
perf=0
for a in "$@"; do
  case "$a" in
    --quick) quick=1 ;;
    --perf) perf=1 ;;
  esac
done

missing=()
command -v g++ >/dev/null || missing+=(g++)
[ -f /usr/include/nats/nats.h ] || missing+=(libnats-dev)
command -v gnuplot >/dev/null || missing+=(gnuplot-nox)
[ -x /usr/lib/postgresql/15/bin/pgbench ] || missing+=(postgresql-15)
/usr/bin/python3 -c 'import avro.io' 2>/dev/null || missing+=(python3-avro)
command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || missing+=(nats-server)
if [ "$perf" = 1 ]; then command -v perf >/dev/null || missing+=(linux-perf); fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "bench: missing packages: ${missing[*]} (apt-get install -y ${missing[*]})" >&2
  exit 1
fi

build=$(mktemp -d /tmp/creek-bench-build.XXXXXX)
trap 'rm -rf "$build"' EXIT
g++ -O2 -std=c++17 -Wall -Wextra -Isrc -o "$build/js_ceiling" bench/js_ceiling.cpp src/nats_msg.cpp -lnats -ldl

# Bounded: the whole run is stopped (servers cleaned up on SIGTERM) after this.
limit=2700
[ "$quick" = 1 ] && limit=900
timeout --signal=TERM --kill-after=60 "$limit" \
  /usr/bin/python3 bench/bench.py --js-ceiling "$build/js_ceiling" "$@"
