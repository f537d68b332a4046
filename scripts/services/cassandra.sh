#!/usr/bin/env bash
# Fetch the jars of a single-node Apache Cassandra 5.0 from Maven Central into a cache
# directory (no jars are committed) and print that directory. Idempotent: a complete
# download is marked and reused. The server itself is started by the tests
# (secureconnect/testing/services.py: CassandraServer) with a generated cassandra.yaml.
#
#   scripts/services/cassandra.sh            # → prints e.g. ~/.cache/secureconnect/cassandra-5.0.8
#   SC_CASSANDRA_VERSION=5.0.x scripts/services/cassandra.sh
set -euo pipefail

version="${SC_CASSANDRA_VERSION:-5.0.8}"
home="${SC_CASSANDRA_HOME:-$HOME/.cache/secureconnect/cassandra-$version}"
lib="$home/lib"
marker="$home/.complete"

if [ -f "$marker" ] && ls "$lib"/cassandra-all-*.jar >/dev/null 2>&1; then
  echo "$home"
  exit 0
fi

missing=()
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

mkdir -p "$home"
cat > "$home/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.secureconnect</groupId>
  <artifactId>cassandra-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.cassandra</groupId>
      <artifactId>cassandra-all</artifactId>
      <version>$version</version>
    </dependency>
  </dependencies>
</project>
POM

echo "fetching cassandra-all $version and its dependencies into $lib" >&2
rm -rf "$lib"
# cassandra-parent logs a harmless "[ERROR] ... systemPath ... jmc5.path" line; the
# build goes on. The plugin version is pinned: a bare dependency: goal is too old.
mvn -B -q -f "$home/pom.xml" \
  org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
  -DoutputDirectory="$lib" -DincludeScope=runtime >&2
ls "$lib"/cassandra-all-*.jar >/dev/null
ls "$lib"/jamm-*.jar >/dev/null
touch "$marker"
echo "$home"
