#!/usr/bin/env bash
# End-to-end benchmark (issue 6): smtp-source → MTA → smtp-sink on loopback, for Relay and for a
# private Postfix instance in the same run, plus the ceiling (smtp-source straight into smtp-sink).
# Reports messages/s (until the sink has every message) and CPU ms per message: the MTA's own
# processes, and the whole machine (MTA + load tools) from /proc/stat.
# usage: bench/e2e/run.sh [messages] [sessions]        no DNS: Relay sends to an address literal,
#                                                      Postfix to relayhost = [127.0.0.1]:port
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
N=${1:-5000}
S=${2:-20}
TMP=$ROOT/bench/results/tmp/e2e
RELAY_PORT=2725; POSTFIX_PORT=2726; SINK_PORT=2727

. bench/lib/common.sh
ensure_postfix_tools

pids=()
cleanup() {
    for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    stop_private_postfix "$TMP/postfix"
}
trap cleanup EXIT
rm -rf "$TMP" && mkdir -p "$TMP"

smtp-sink -u postfix -c "127.0.0.1:$SINK_PORT" 1000 > "$TMP/sink.out" 2>&1 &
pids+=($!)
sink_count() { tr '\r' '\n' < "$TMP/sink.out" | grep -o 'mesg=[0-9]*' | tail -1 | cut -d= -f2; }

dotnet build -c Release src/Relay -nologo -v q >/dev/null
cat > "$TMP/relay.toml" <<TOML
[server]
hostname = "relay.bench.test"
[server.listener.smtp]
bind = ["127.0.0.1:$RELAY_PORT"]
[session.relay]
networks = ["127.0.0.0/8"]
[spool]
path = "$TMP/relay-spool"
[resolver]
nameservers = ["127.0.0.1:1"]        # never used: recipients are address literals
[delivery]
port = $SINK_PORT
max-connections-per-host = ${RELAY_HOST_CONNECTIONS:-20}        # Postfix's default_destination_concurrency_limit
[queue.strategy]
schedule = [ { else = "'default'" } ]
[queue.schedule.default]
retry = ["10s"]
[queue.virtual.default]
threads-per-node = 100
TOML
./src/Relay/bin/Release/net10.0/relay serve --config "$TMP/relay.toml" --log-level Warning > "$TMP/relay.log" 2>&1 &
RELAY_PID=$!; pids+=("$RELAY_PID")

PF=$TMP/postfix
start_private_postfix "$PF" $POSTFIX_PORT "relayhost = [127.0.0.1]:$SINK_PORT"

wait_port $RELAY_PORT; wait_port $POSTFIX_PORT; wait_port $SINK_PORT

busy_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }
postfix_pids() { pgrep -f "$PF" ; pgrep -u postfix; }
HZ=$(getconf CLK_TCK)

measure() { # name port rcpt → "rate machine_ms"; waits until the sink count grew by N
    local base t0 t1 b0 b1 target
    base=$(sink_count); base=${base:-0}; target=$((base + N))
    b0=$(busy_ticks); t0=$(date +%s.%N)
    smtp-source -s "$S" -m "$N" -l 4096 -f bench@sender.test -t "$3" "127.0.0.1:$2"
    while [ "$(sink_count)" -lt "$target" ]; do
        sleep 0.05
        if [ "$(echo "$(date +%s.%N) - $t0 > 600" | bc)" = 1 ]; then echo "timeout waiting for the sink" >&2; return 1; fi
    done
    t1=$(date +%s.%N); b1=$(busy_ticks)
    echo "$(echo "$N / ($t1 - $t0)" | bc -l) $(echo "($b1 - $b0) * 1000 / $HZ / $N" | bc -l)"
}

read -r ceiling ceiling_cpu < <(measure sink $SINK_PORT "rcpt@remote.test")
r0=$(proc_ticks $RELAY_PID)
read -r relay relay_cpu < <(measure relay $RELAY_PORT "rcpt@[127.0.0.1]")
r1=$(proc_ticks $RELAY_PID)
p0=$(proc_ticks $(postfix_pids))
read -r post post_cpu < <(measure postfix $POSTFIX_PORT "rcpt@remote.test")
p1=$(proc_ticks $(postfix_pids))

printf "messages per run: %s, 4 KiB, 1 recipient, %s sessions\n\n" "$N" "$S"
printf "| path | msg/s | machine CPU ms/msg | MTA CPU ms/msg |\n|---|---|---|---|\n"
printf "| smtp-source → smtp-sink (ceiling) | %.0f | %.2f | — |\n" "$ceiling" "$ceiling_cpu"
printf "| → Relay → smtp-sink | %.0f | %.2f | %.2f |\n" "$relay" "$relay_cpu" "$(echo "($r1 - $r0) * 1000 / $HZ / $N" | bc -l)"
printf "| → Postfix → smtp-sink | %.0f | %.2f | %.2f (live processes only) |\n" "$post" "$post_cpu" "$(echo "($p1 - $p0) * 1000 / $HZ / $N" | bc -l)"
printf "\nRelay/Postfix throughput ratio: %.2f\n" "$(echo "$relay / $post" | bc -l)"
