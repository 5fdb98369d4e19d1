#!/usr/bin/env bash
# Test services for the station's records and MQTT tests: a PostgreSQL server
# and a Mosquitto broker on loopback, installed from Debian's packages.
#
#   source .ci/services.sh     # from .ci/run (or by hand)
#
# Exports GAIKAN_TEST_PG_URL and GAIKAN_TEST_MQTT and writes them to
# $GAIKAN_CI_DIR/services.env (default /tmp/gaikan-ci), which the tests also
# read.  Idempotent and quick when everything is installed and running.  A
# service that cannot be installed or started is reported and left out: the
# tests that need it are then skipped with that reason.  Never exits the
# calling shell.

GAIKAN_CI_DIR="${GAIKAN_CI_DIR:-/tmp/gaikan-ci}"
GAIKAN_PG_PORT="${GAIKAN_PG_PORT:-5432}"
GAIKAN_MQTT_PORT="${GAIKAN_MQTT_PORT:-18830}"

_gaikan_as_postgres() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo -n -u postgres "$@"
  else
    return 1
  fi
}

_gaikan_apt() {
  local need=()
  command -v pg_ctlcluster >/dev/null || need+=(postgresql)
  [ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null || need+=(mosquitto)
  [ ${#need[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || return 1
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo -n"
  { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
    --no-install-recommends "${need[@]}"; } >"$GAIKAN_CI_DIR/apt.log" 2>&1
}

_gaikan_postgres() {
  command -v pg_lsclusters >/dev/null || return 1
  local ver
  ver=$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -1)
  [ -n "$ver" ] || return 1
  if ! pg_lsclusters -h | awk -v v="$ver" '$1 == v && $2 == "main"' | grep -q .; then
    pg_createcluster "$ver" main -p "$GAIKAN_PG_PORT" >/dev/null || return 1
  fi
  GAIKAN_PG_PORT=$(pg_lsclusters -h | awk -v v="$ver" '$1 == v && $2 == "main" {print $3}')
  if ! pg_lsclusters -h | awk -v v="$ver" '$1 == v && $2 == "main" {print $4}' | grep -q online; then
    pg_ctlcluster "$ver" main start || return 1
  fi
  _gaikan_as_postgres psql -q -p "$GAIKAN_PG_PORT" -tAc \
    "SELECT 1 FROM pg_roles WHERE rolname = 'gaikan'" | grep -q 1 \
    || _gaikan_as_postgres psql -q -p "$GAIKAN_PG_PORT" -c \
      "CREATE ROLE gaikan LOGIN CREATEDB PASSWORD 'gaikan'" || return 1
  _gaikan_as_postgres psql -q -p "$GAIKAN_PG_PORT" -tAc \
    "SELECT 1 FROM pg_database WHERE datname = 'gaikan_test'" | grep -q 1 \
    || _gaikan_as_postgres createdb -p "$GAIKAN_PG_PORT" -O gaikan gaikan_test || return 1
  GAIKAN_TEST_PG_URL="postgresql://gaikan:gaikan@127.0.0.1:${GAIKAN_PG_PORT}/gaikan_test"
}

_gaikan_mosquitto() {
  local bin pidfile="$GAIKAN_CI_DIR/mosquitto.pid"
  bin=$(command -v mosquitto || echo /usr/sbin/mosquitto)
  [ -x "$bin" ] || return 1
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    GAIKAN_TEST_MQTT="127.0.0.1:${GAIKAN_MQTT_PORT}"
    return 0
  fi
  cat >"$GAIKAN_CI_DIR/mosquitto.conf" <<CONF
listener ${GAIKAN_MQTT_PORT} 127.0.0.1
allow_anonymous true
user $(id -un)
persistence false
pid_file ${pidfile}
log_dest file ${GAIKAN_CI_DIR}/mosquitto.log
CONF
  "$bin" -d -c "$GAIKAN_CI_DIR/mosquitto.conf" || return 1
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    [ -f "$pidfile" ] && break
    sleep 0.2
  done
  [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null || return 1
  GAIKAN_TEST_MQTT="127.0.0.1:${GAIKAN_MQTT_PORT}"
}

mkdir -p "$GAIKAN_CI_DIR"
_gaikan_apt || echo "warning: could not install postgresql/mosquitto (see $GAIKAN_CI_DIR/apt.log)"
GAIKAN_TEST_PG_URL=""
GAIKAN_TEST_MQTT=""
_gaikan_postgres || echo "warning: no PostgreSQL server; the PostgreSQL tests will be skipped"
_gaikan_mosquitto || echo "warning: no Mosquitto broker; the MQTT tests will be skipped"
export GAIKAN_TEST_PG_URL GAIKAN_TEST_MQTT
printf 'GAIKAN_TEST_PG_URL=%s\nGAIKAN_TEST_MQTT=%s\n' "$GAIKAN_TEST_PG_URL" "$GAIKAN_TEST_MQTT" \
  >"$GAIKAN_CI_DIR/services.env"
