#!/usr/bin/env bash
# The daemon's main job on a bundled local setup: installs what is missing, builds, starts a
# throwaway PostgreSQL and the Druid test server with the Wikipedia sample, runs one sync
# cycle with the real binary and config file, and prints what landed.
# Usage: bash tests/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
bash tests/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" >/dev/null

WORK=$(mktemp -d /tmp/druid-syncd-demo.XXXXXX)
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
PGPORT=$((20000 + $$ % 20000))
RUNAS=()
[ "$(id -u)" -eq 0 ] && { chown postgres:postgres "$WORK"; RUNAS=(runuser -u postgres --); }
SIM_PID=""
cleanup() {
  [ -n "$SIM_PID" ] && kill "$SIM_PID" 2>/dev/null || true
  "${RUNAS[@]}" "$PGBIN/pg_ctl" -D "$WORK/pg" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "== starting a throwaway PostgreSQL in $WORK"
"${RUNAS[@]}" "$PGBIN/initdb" -D "$WORK/pg" -U postgres -A trust -E UTF8 --no-locale --no-sync >/dev/null
"${RUNAS[@]}" "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w -t 60 \
  -o "-p $PGPORT -k $WORK -c listen_addresses=''" start >/dev/null
PSQL=(psql -X -q -h "$WORK" -p "$PGPORT" -U postgres)
"${PSQL[@]}" -d postgres -c "CREATE DATABASE demo" >/dev/null

SAMPLE="$ROOT/../shared/data/wikiticker-2015-09-12-sampled.json.gz"
if [ ! -f "$SAMPLE" ]; then
  echo "== ../shared/data is absent: generating a sample of the same shape"
  SAMPLE="$WORK/wikiticker-generated.json"
  /usr/bin/python3 tests/druid_sim/gen_sample.py "$SAMPLE" 39244
fi
echo "== starting the Druid test server with $(basename "$SAMPLE")"
/usr/bin/python3 tests/druid_sim/druid_sim.py --port 0 --port-file "$WORK/sim.port" \
  --load "wikipedia=$SAMPLE" >"$WORK/sim.log" 2>&1 &
SIM_PID=$!
for _ in $(seq 1 600); do [ -s "$WORK/sim.port" ] && break; sleep 0.1; done
[ -s "$WORK/sim.port" ] || { echo "the Druid test server did not start:"; cat "$WORK/sim.log"; exit 1; }
SIM_PORT=$(cat "$WORK/sim.port")

cat >"$WORK/config.json" <<JSON
{
  "druid_host": "127.0.0.1",
  "druid_port": $SIM_PORT,
  "schema_name": "druid",
  "incremental_column": "__time",
  "use_ssl": false,
  "postgres": "host=$WORK port=$PGPORT user=postgres dbname=demo",
  "destination_schema": "druid",
  "batch_size": 10000,
  "max_concurrent_queries": 4
}
JSON
echo "== druid-syncd --once -c $WORK/config.json"
./build/druid-syncd --once -c "$WORK/config.json"

echo "== what landed in PostgreSQL"
"${PSQL[@]}" -d demo -c "\dt druid.*"
"${PSQL[@]}" -d demo -c "SELECT datasource, mode, cursor, rows_synced, last_success IS NOT NULL AS ok FROM druid.druid_syncd_state"
"${PSQL[@]}" -d demo -c "SELECT count(*) AS rows, sum(added) AS added, sum(deleted) AS deleted, sum(delta) AS delta FROM druid.wikipedia WHERE NOT _druid_deleted"
"${PSQL[@]}" -d demo -c "SELECT page, count(*) AS edits FROM druid.wikipedia GROUP BY page ORDER BY edits DESC, page LIMIT 5"
