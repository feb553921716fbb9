#!/bin/bash
# What writing creek's row messages costs: creek's direct Avro encoder against
# avro-c's generic value API, for the benchmark's narrow and wide rows
# (bench/encode_cost.cpp). Prints a Markdown table.
#   bash bench/encode_cost.sh [--rows N] [--rounds R]
set -euo pipefail
cd "$(dirname "$0")/.."
build=$(mktemp -d /tmp/creek-encode-cost.XXXXXX)
trap 'rm -rf "$build"' EXIT
g++ -O2 -std=c++17 -Wall -Wextra -Isrc -o "$build/encode_cost" bench/encode_cost.cpp -lavro
"$build/encode_cost" "$@"
