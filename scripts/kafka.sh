#!/usr/bin/env bash
# A single-node Apache Kafka (KRaft, broker+controller) on loopback, for the
# real-cluster tests and for running the production binaries by hand.
#
# Two client listeners: PLAINTEXT on 127.0.0.1:$SB_KAFKA_PORT (19092), and
# SASL_SSL on localhost:$SB_KAFKA_SECURE_PORT (19094), as a managed cluster
# offers it: TLS with a certificate signed by the project's test CA
# (scripts/tls.sh; clients trust .work/tls/ca.crt) and SASL with
# SCRAM-SHA-512 or PLAIN, user `sb`, password `sb-secret`.
#
#   scripts/kafka.sh start    fetch jars (cached), format storage once, start, wait until it serves
#   scripts/kafka.sh stop     stop it
#   scripts/kafka.sh status
#
# Jars come from Maven Central (org.apache.kafka:kafka_2.13 and its runtime
# dependencies) via `mvn dependency:copy-dependencies`; Debian has no Kafka
# package. Data and logs live under .work/kafka (ignored by git).
set -euo pipefail

KAFKA_VERSION="${SB_KAFKA_VERSION:-4.1.1}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${SB_WORK_DIR:-$ROOT/.work}/kafka"
LIBS="${SB_CACHE_DIR:-$HOME/.cache/switchboard}/kafka-$KAFKA_VERSION/libs"
PORT="${SB_KAFKA_PORT:-19092}"
CONTROLLER_PORT="${SB_KAFKA_CONTROLLER_PORT:-19093}"
SECURE_PORT="${SB_KAFKA_SECURE_PORT:-19094}"
SASL_USER=sb
SASL_PASSWORD=sb-secret
PIDFILE="$WORK/kafka.pid"

fetch() {
    if [ -f "$LIBS/.complete" ]; then return; fi
    echo "fetching Kafka $KAFKA_VERSION jars into $LIBS"
    local pomdir
    pomdir="$(mktemp -d)"
    cat > "$pomdir/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>switchboard</groupId><artifactId>kafka-runtime</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>2.24.3</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>2.24.3</version></dependency>
  </dependencies>
</project>
POM
    mkdir -p "$LIBS"
    mvn -q -B -f "$pomdir/pom.xml" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$LIBS"
    rm -rf "$pomdir"
    touch "$LIBS/.complete"
}

configure() {
    mkdir -p "$WORK/data"
    local tls
    tls="$("$ROOT/scripts/tls.sh" make)"
    cat > "$WORK/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT,SASL_SSL://127.0.0.1:$SECURE_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT,SASL_SSL://localhost:$SECURE_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
inter.broker.listener.name=PLAINTEXT
# The managed-cluster listener: TLS (a PEM keystore: key and certificate in
# one file) and SASL. SCRAM users live in the cluster metadata (added after
# start); PLAIN's user is declared here.
ssl.keystore.type=PEM
ssl.keystore.location=$tls/server.pem
sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$SASL_USER="$SASL_PASSWORD";
log.dirs=$WORK/data
num.partitions=4
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
# Write the logs to disk every second. Left to the kernel, a segment's dirty
# pages go out only once the file has been dirty for 30 s, all at once (over
# 100 MB at a few thousand msg/s); on a host whose PostgreSQL shares the disk,
# its commit fsyncs then wait behind that burst for up to 250 ms.
log.flush.interval.ms=1000
log.flush.scheduler.interval.ms=1000
PROPS
    cat > "$WORK/log4j2.properties" <<LOG
rootLogger.level=INFO
rootLogger.appenderRef.file.ref=file
appender.file.type=File
appender.file.name=file
appender.file.fileName=$WORK/server.log
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
LOG
}

running() {
    [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

start() {
    if running; then
        # A broker started by an older version of this script has no SASL_SSL listener.
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$SECURE_PORT") 2>/dev/null; then
            echo "kafka is running (pid $(cat "$PIDFILE")) without its SASL_SSL listener on $SECURE_PORT" \
                "(started by an older scripts/kafka.sh): run scripts/kafka.sh stop, then start" >&2
            exit 1
        fi
        echo "kafka already running (pid $(cat "$PIDFILE")) on 127.0.0.1:$PORT"
        return
    fi
    # Another checkout's broker (or anything else) on a port would make ours fail late and obscurely.
    for port in "$PORT" "$SECURE_PORT"; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "port 127.0.0.1:$port is taken by another process (another checkout's broker?); stop it first" >&2
            exit 1
        fi
    done
    fetch
    configure
    local cp="$LIBS/*"
    if [ ! -f "$WORK/data/meta.properties" ]; then
        local id
        id="$(java -cp "$cp" kafka.tools.StorageTool random-uuid)"
        java -cp "$cp" -Dlog4j2.configurationFile="$WORK/log4j2.properties" \
            kafka.tools.StorageTool format -t "$id" -c "$WORK/server.properties" >/dev/null
    fi
    : > "$WORK/server.log"
    # G1 with a 20 ms pause goal, as Kafka's own start script runs it; the GC
    # log lets pauses be lined up with latency.
    nohup java -Xms768m -Xmx768m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
        -XX:+ExplicitGCInvokesConcurrent -Xlog:gc:file="$WORK/gc.log":time,uptime \
        -cp "$cp" -Dlog4j2.configurationFile="$WORK/log4j2.properties" \
        kafka.Kafka "$WORK/server.properties" > "$WORK/stdout.log" 2>&1 &
    echo $! > "$PIDFILE"
    for _ in $(seq 1 120); do
        if grep -q "Kafka Server started" "$WORK/server.log" 2>/dev/null; then
            # The SCRAM user (idempotent: the same password again).
            java -cp "$cp" -Dlog4j2.configurationFile="$WORK/log4j2.properties" kafka.admin.ConfigCommand \
                --bootstrap-server "127.0.0.1:$PORT" --alter --entity-type users --entity-name "$SASL_USER" \
                --add-config "SCRAM-SHA-512=[iterations=4096,password=$SASL_PASSWORD]" >/dev/null
            echo "kafka $KAFKA_VERSION running on 127.0.0.1:$PORT and SASL_SSL localhost:$SECURE_PORT (pid $(cat "$PIDFILE"))"
            return
        fi
        if ! running; then break; fi
        sleep 0.5
    done
    echo "kafka did not start; see $WORK/server.log and $WORK/stdout.log" >&2
    tail -20 "$WORK/stdout.log" >&2 || true
    exit 1
}

stop() {
    if running; then
        local pid
        pid="$(cat "$PIDFILE")"
        kill "$pid"
        for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$PIDFILE"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) if running; then echo "running (pid $(cat "$PIDFILE"))"; else echo "stopped"; exit 1; fi ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 64 ;;
esac
