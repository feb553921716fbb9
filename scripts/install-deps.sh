#!/usr/bin/env bash
# Installs what creek needs to build, run and test, from Debian's packages.
# Idempotent; skips apt-get when everything is already installed.
set -euo pipefail

PKGS=(
  build-essential postgresql-15 postgresql-server-dev-15 postgresql-contrib
  libnats-dev libavro-dev nats-server
  postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl
  python3 python3-avro python3-pytest openssl
  gnuplot-nox
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
