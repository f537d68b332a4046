#!/usr/bin/env bash
# Install the servers the integration tests start privately (PostgreSQL, Redis) from
# Debian's packages, Chromium + chromedriver for the browser tests, and Cassandra 5.0's jars from Maven Central (cassandra.sh). Idempotent: does nothing when they are present. Tests start their
# own throwaway instances on free loopback ports (secureconnect/testing/services.py);
# nothing here starts a system-wide service.
set -euo pipefail

need=()
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v wrk >/dev/null 2>&1 || need+=(wrk)   # benchmarks only
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)  # Cassandra
command -v mvn >/dev/null 2>&1 || need+=(maven)  # fetches Cassandra's jars
command -v promtool >/dev/null 2>&1 || need+=(prometheus)  # promtool tests deploy/prometheus/alerts.yml
# browser tests (tests/web): Debian's chromium and its matching chromedriver
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)

if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # the Debian packages start a system cluster/server; tests use private ones
  service postgresql stop >/dev/null 2>&1 || true
  service redis-server stop >/dev/null 2>&1 || true
  service prometheus stop >/dev/null 2>&1 || true
fi
echo "postgres: $(ls -d /usr/lib/postgresql/*/bin | tail -1)"
echo "redis: $(redis-server --version | head -1)"
echo "promtool: $(promtool --version 2>&1 | head -1)"
echo "chromium: $(chromium --version 2>/dev/null | head -1)"
echo "cassandra: $(bash "$(dirname "$0")/cassandra.sh")"
