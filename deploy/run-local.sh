#!/usr/bin/env bash
# `make run`: a local 3-broker Apache Kafka (bootstrap 127.0.0.1:19092) and the gateway in
# front of it with the example policies, deploy/examples/acl-quota.yaml (bootstrap
# 127.0.0.1:9092; SASL/PLAIN users alice, bob, admin). CONFIG=... picks another file,
# e.g. CONFIG=deploy/examples/minimal.yaml for a plain transparent gateway. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
CONFIG=${CONFIG:-deploy/examples/acl-quota.yaml}
kafka_pid="" gateway_pid=""

stop_all() {
  trap - EXIT INT TERM
  for pid in $gateway_pid $kafka_pid; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop_all EXIT INT TERM

wait_for_metadata() {  # $1 = bootstrap address, $2 = pid that must stay alive, $3 = what
  for _ in $(seq 1 240); do
    if kcat -b "$1" -L -m 2 >/dev/null 2>&1; then return 0; fi
    kill -0 "$2" 2>/dev/null || { echo "$3 exited before it served $1" >&2; exit 1; }
    sleep 0.5
  done
  echo "$3 did not serve metadata on $1 within 120 s" >&2
  exit 1
}

"$BIN/kafka-gateway" local-kafka --brokers 3 --port 19092 &
kafka_pid=$!
wait_for_metadata 127.0.0.1:19092 "$kafka_pid" "local Kafka"

wait_for_port() {  # $1 = port, $2 = pid that must stay alive, $3 = what
  for _ in $(seq 1 120); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    kill -0 "$2" 2>/dev/null || { echo "$3 exited before it listened on $1" >&2; exit 1; }
    sleep 0.5
  done
  echo "$3 did not listen on 127.0.0.1:$1 within 60 s" >&2
  exit 1
}

mkdir -p .cache
"$BIN/kafka-gateway" run --config "$CONFIG" --pid-file .cache/gateway.pid &
gateway_pid=$!
# A port check, not a metadata request: example configs may require authentication.
wait_for_port 9092 "$gateway_pid" "the gateway"

if grep -q "mechanisms: \[PLAIN\]" "$CONFIG"; then
  SASL="-X security.protocol=SASL_PLAINTEXT -X sasl.mechanisms=PLAIN"
  ALICE="$SASL -X sasl.username=alice -X sasl.password=alice-secret"
  BOB="$SASL -X sasl.username=bob -X sasl.password=bob-secret"
else
  ALICE="" BOB=""
fi
cat <<MSG

  kafka-gateway is running with $CONFIG:
  bootstrap 127.0.0.1:9092 -> local Kafka 127.0.0.1:19092
  Point any Kafka client at it, for example:
    echo hello | kcat -b 127.0.0.1:9092 $ALICE -t orders.demo -P
    kcat -b 127.0.0.1:9092 $BOB -G bob-demo orders.demo
    kcat -b 127.0.0.1:9092 $ALICE -L
  Edit $CONFIG, then: .venv/bin/kafka-gateway reload --pid-file .cache/gateway.pid
  Ctrl-C stops the gateway and Kafka.

MSG
wait -n "$kafka_pid" "$gateway_pid"
