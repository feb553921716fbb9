#!/usr/bin/env bash
# Builds creek and installs it into the local PostgreSQL 15.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
make -s -j"$(nproc)" PG_CONFIG=$PG_CONFIG >/dev/null
$SUDO make -s install PG_CONFIG=$PG_CONFIG >/dev/null
echo "creek built and installed into $($PG_CONFIG --pkglibdir)"
