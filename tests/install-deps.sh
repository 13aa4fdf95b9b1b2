#!/usr/bin/env bash
# Installs the Debian 12 packages druid-syncd needs to build, test and run its demo.
# Idempotent: does nothing when everything is already there.
set -euo pipefail
PKGS=(cmake gcc make pkg-config libuv1-dev libcurl4-openssl-dev libjson-c-dev libyajl-dev libpq-dev
      libsystemd-dev libxxhash-dev libcmocka-dev postgresql postgresql-client python3
      systemd clang-format openssl time clang-14 libclang-rt-14-dev pgbouncer)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  echo "Installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
