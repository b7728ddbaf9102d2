#!/usr/bin/env bash
# Kafka for the local environment: the broker, the tools and the Prometheus JMX
# agent as plain jars, resolved from Maven Central by backbone_infra/kafka/pom.xml into
#   ${BACKBONE_CACHE:-$HOME/.cache/backbone}/kafka-<version>/libs/
# Idempotent: a stamp holding the POM's hash makes a second run instant, and
# Maven keeps its downloads in ~/.m2, so even a changed POM re-copies quickly.
set -euo pipefail
cd "$(dirname "$0")/../.."

KAFKA_VERSION=4.1.1
POM=backbone_infra/kafka/pom.xml
CACHE=${BACKBONE_CACHE:-$HOME/.cache/backbone}
HOME_DIR=$CACHE/kafka-$KAFKA_VERSION
LIBS=$HOME_DIR/libs
STAMP=$HOME_DIR/libs.complete

. scripts/lib.sh

pom_hash=$(sha256sum "$POM" | cut -c1-16)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$pom_hash" ] && [ -d "$LIBS" ]; then
  exit 0
fi

for tool in java mvn; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "setup: Kafka needs '$tool' (Java 17+ and Maven); install them, e.g." \
         "apt-get install -y openjdk-17-jre-headless maven, and run make setup again" >&2
    exit 2
  fi
done
java_major=$(java -XshowSettings:properties -version 2>&1 | awk -F'= ' '/java.specification.version/ {print $2}')
if [ "${java_major%%.*}" -lt 17 ] 2>/dev/null; then
  echo "setup: Kafka $KAFKA_VERSION needs Java 17 or newer; found $java_major" >&2
  exit 2
fi

say "resolving Kafka $KAFKA_VERSION jars into $LIBS (Maven, cached in ~/.m2)"
mkdir -p "$HOME_DIR"
tmp=$(mktemp -d "$HOME_DIR/libs.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
if ! run_logged "resolving the Kafka jars with Maven" "$HOME_DIR/maven.log" \
    mvn -q -B -f "$POM" dependency:copy-dependencies -DoutputDirectory="$tmp"; then
  echo "setup: Maven could not resolve $POM (see the lines above); check that Maven Central is reachable" >&2
  exit 2
fi
# Swap the complete directory in, so a half-copied libs/ is never used.
rm -rf "$LIBS"
mv "$tmp" "$LIBS"
trap - EXIT
echo "$pom_hash" >"$STAMP"
say "Kafka jars ready ($(du -sh "$LIBS" | cut -f1))"
