#!/usr/bin/env bash
# Ingest benchmark (issue 4): smtp-source → Relay (durable spool, delivery held) and → a private
# Postfix instance (delivery deferred), 4 KiB messages, 1/20/100 sessions, 1 and 5 recipients.
# Prints accepted msg/s, the Relay/Postfix ratio and Relay's CPU ms per message.
# usage: bench/ingest/run.sh [messages-per-run]      (run from anywhere; loopback only, no DNS)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
N=${1:-3000}
TMP=$ROOT/bench/results/tmp/ingest
RELAY_PORT=2625
POSTFIX_PORT=2626

. bench/lib/common.sh
ensure_postfix_tools

pids=()
cleanup() {
    for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    stop_private_postfix "$TMP/postfix"
}
trap cleanup EXIT
rm -rf "$TMP" && mkdir -p "$TMP"

dotnet build -c Release src/Relay -nologo -v q >/dev/null
sed "s#bench/results/tmp/relay-spool#$TMP/relay-spool#" bench/ingest/relay-bench.toml > "$TMP/relay.toml"
./src/Relay/bin/Release/net10.0/relay serve --config "$TMP/relay.toml" --log-level Warning > "$TMP/relay.log" 2>&1 &
RELAY_PID=$!; pids+=("$RELAY_PID")

# A private Postfix: own config, queue and data directories; smtpd on 127.0.0.1:2626; the smtp
# transport deferred so nothing leaves; no DNS anywhere.
PF=$TMP/postfix
start_private_postfix "$PF" $POSTFIX_PORT "relayhost = [127.0.0.1]:9
defer_transports = smtp"

wait_port $RELAY_PORT; wait_port $POSTFIX_PORT

cpu_ticks() { awk '{print $14+$15}' /proc/$1/stat; }
run() { # port sessions rcpts → msg/s
    local t0 t1
    t0=$(date +%s.%N)
    smtp-source -s "$2" -m "$N" -l 4096 -r "$3" -f bench@sender.test -t rcpt@remote.test "127.0.0.1:$1"
    t1=$(date +%s.%N)
    echo "$N / ($t1 - $t0)" | bc -l
}

printf "| sessions | rcpts | Relay msg/s | Postfix msg/s | ratio | Relay CPU ms/msg |\n|---|---|---|---|---|---|\n"
for rc in 1 5; do
    for s in 1 20 100; do
        c0=$(cpu_ticks $RELAY_PID)
        r=$(run $RELAY_PORT "$s" "$rc")
        c1=$(cpu_ticks $RELAY_PID)
        p=$(run $POSTFIX_PORT "$s" "$rc")
        printf "| %s | %s | %.0f | %.0f | %.2f | %.2f |\n" "$s" "$rc" "$r" "$p" "$(echo "$r / $p" | bc -l)" "$(echo "($c1 - $c0) * 1000 / $(getconf CLK_TCK) / $N" | bc -l)"
    done
done
