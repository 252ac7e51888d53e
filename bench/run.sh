#!/usr/bin/env bash
# The benchmark suite (issue 9): Relay side by side with a private Postfix, in one run, on loopback.
#
#   bench/run.sh                 full suite (< 20 min on 2 cores); results → bench/results/<date>-suite.md
#   BENCH_QUICK=1 bench/run.sh   small counts (1.5–4 min) for development; results → bench/results/tmp/
#
# Phases (BENCH_PHASES, default "ingest e2e lanes realistic"):
#   ingest     smtp-source (1/20/100 sessions, 4 KiB, 1 and 5 rcpts) → Relay (durable spool,
#              [delivery] hold) and → Postfix (defer_transports = smtp); accepted msg/s, CPU ms/msg
#   e2e        smtp-source → MTA → smtp-sink, until the sink has every message; smtp-sink's own ceiling;
#              CPU ms/msg, CPU s per 10,000 messages, peak RSS (footprint)
#   lanes      a bulk backlog (≥ 50,000 in the full run) to a sink answering after 1 s, then urgent
#              messages (MT-PRIORITY=6 where offered, X-Message-Priority: urgent) to another sink;
#              p50/p95/p99 from the 250 to arrival
#   realistic  e2e against a sink that takes 50 ms per message, answers 4xx once to 5 % and 5xx to 2 %
#              of recipients; DSNs to a DSN sink; msg/s until every message is delivered or bounced
# BENCH_POSTFIX_EXTRA: main.cf lines appended to every private Postfix (experiments only).
# BENCH_KEEP=1 keeps the temp dir (configs, relay.log, Postfix maillog, sink logs) for debugging.
# Counts: BENCH_INGEST_N BENCH_E2E_N BENCH_E2E_SESSIONS BENCH_BACKLOG BENCH_URGENT BENCH_REAL_N.
# Nothing leaves 127.0.0.1 and nothing is looked up in DNS: Relay routes every domain to a smart host
# at 127.0.0.1 ([resolver] points at a dead loopback port), Postfix uses [127.0.0.1]:port next hops
# with smtp_dns_support_level = disabled and smtpd_peername_lookup = no.
# Needs root (apt-get, a private Postfix); installs postfix and python3 from Debian when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
. bench/lib/common.sh

QUICK=${BENCH_QUICK:-0}
PHASES=${BENCH_PHASES:-ingest e2e lanes realistic}
if [ "$QUICK" = 1 ]; then
    INGEST_N=${BENCH_INGEST_N:-300}; E2E_N=${BENCH_E2E_N:-1000}; BACKLOG=${BENCH_BACKLOG:-5000}
    URGENT=${BENCH_URGENT:-50}; REAL_N=${BENCH_REAL_N:-600}; URGENT_WAIT=20
else
    INGEST_N=${BENCH_INGEST_N:-3000}; E2E_N=${BENCH_E2E_N:-10000}; BACKLOG=${BENCH_BACKLOG:-50000}
    URGENT=${BENCH_URGENT:-200}; REAL_N=${BENCH_REAL_N:-5000}; URGENT_WAIT=60
fi
E2E_S=${BENCH_E2E_SESSIONS:-20}
URGENT_INTERVAL=0.05          # urgent messages start 50 ms apart (20/s), one SMTP session
BULK_DELAY=1                  # the slow destination answers end-of-DATA after 1 s (20 connections → ~20 msg/s)
CONC=20                       # connections per destination: Postfix's default_destination_concurrency_limit
P=${BENCH_PORT_BASE:-27100}   # ports P..P+5 on 127.0.0.1
RELAY_PORT=$P; POSTFIX_PORT=$((P+1)); SINK_PORT=$((P+2)); SLOW_PORT=$((P+3)); URGENT_PORT=$((P+4)); DSN_PORT=$((P+5))
DATE=$(date +%F)
if [ "$QUICK" = 1 ]; then OUT=${BENCH_OUT:-bench/results/tmp/$DATE-suite-quick.md}; else OUT=${BENCH_OUT:-bench/results/$DATE-suite.md}; fi
HZ=$(getconf CLK_TCK)
SUITE_T0=$(now)

TMP=$(mktemp -d /tmp/relay-bench.XXXXXX)
chmod 755 "$TMP"                 # Postfix's unprivileged daemons must reach their queue under it
PIDS=()                          # every process this script started (Postfix: master and children)
POSTFIX_DIRS=()
cleanup() {
    local rc=$? p pf
    trap - EXIT INT TERM
    for pf in "${POSTFIX_DIRS[@]:-}"; do [ -n "$pf" ] && stop_postfix "$pf"; done
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && wait_gone "$p" 5 && continue; [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
    if [ "${BENCH_KEEP:-0}" = 1 ]; then log "kept $TMP (configs, relay.log, Postfix maillog, sink logs)"; else rm -rf "$TMP"; fi
    exit $rc
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

command -v dotnet >/dev/null 2>&1 || { echo "needs the .NET 10 SDK (dotnet) on PATH" >&2; exit 1; }
ensure_postfix_tools
ensure_python
log "machine: $(nproc) cores, $(free -m | awk '/^Mem:/{print $2}') MiB, load $(cut -d' ' -f1-3 /proc/loadavg); temp dir $TMP"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
PY=$(command -v python3)
SINK="$PY $ROOT/bench/tools/sink.py"

log "building Relay (Release)"
dotnet publish src/Relay -c Release -o "$TMP/relay-bin" -nologo -v q >"$TMP/publish.log" 2>&1 || { cat "$TMP/publish.log" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# Processes: Relay, Postfix, sinks. Each start records its pid in PIDS; stop_* waits for exit.
# ---------------------------------------------------------------------------------------------
RELAY_PID=
# relay_config NAME HOLD ROUTE_RULES SMART_HOSTS QUEUES → $TMP/NAME/relay.toml (retries come with QUEUES)
relay_config() {
    local dir=$TMP/$1; mkdir -p "$dir"
    cat > "$dir/relay.toml" <<TOML
[server]
hostname = "relay.bench.test"
[server.listener.smtp]
bind = ["127.0.0.1:$RELAY_PORT"]
[session.relay]
networks = ["127.0.0.0/8"]
[session.priority]
mt-priority-from = ["127.0.0.0/8"]
[spool]
path = "$dir/spool"
[resolver]
nameservers = ["127.0.0.1:1"]        # nothing answers there: every domain is routed to a smart host below
timeout = "1s"
[delivery]
hold = $2
max-connections-per-host = $CONC
route = [ $3 ]
$4
$5
TOML
    echo "$dir/relay.toml"
}
smart_host() { printf '[delivery.smart-host.%s]\nhost = "127.0.0.1"\nport = %s\ntls = "none"\n' "$1" "$2"; }
simple_queues() { # RETRY → one default queue (100 deliveries at once) and a DSN queue
    cat <<TOML
[queue.strategy]
schedule = [ { if = "source == 'dsn'", then = "'dsn'" }, { else = "'default'" } ]
[queue.schedule.default]
retry = ["$1"]
notify = []
expire = "1d"
[queue.schedule.dsn]
retry = ["$1"]
notify = []
max-attempts = 10
[queue.virtual.default]
threads-per-node = 100
[queue.virtual.dsn]
threads-per-node = 10
TOML
}

start_relay() { # CONFIG
    dotnet "$TMP/relay-bin/relay.dll" config check --config "$1" >"$TMP/config-check.log" 2>&1 || { cat "$TMP/config-check.log" >&2; exit 1; }
    dotnet "$TMP/relay-bin/relay.dll" serve --config "$1" --log-level Warning > "$(dirname "$1")/relay.log" 2>&1 &
    RELAY_PID=$!; PIDS+=("$RELAY_PID")
    wait_port $RELAY_PORT || { tail -20 "$(dirname "$1")/relay.log" >&2; exit 1; }
}
stop_relay() { [ -n "$RELAY_PID" ] && { kill "$RELAY_PID" 2>/dev/null; wait_gone "$RELAY_PID" 20 || kill -9 "$RELAY_PID" 2>/dev/null; }; RELAY_PID=; true; }

PF=
start_postfix() { # NAME EXTRA_MAIN_CF
    PF=$TMP/$1/postfix; mkdir -p "$TMP/$1"
    POSTFIX_DIRS+=("$PF")
    start_private_postfix "$PF" $POSTFIX_PORT "$2"
    local m; m=$(postfix_master "$PF"); [ -n "$m" ] && PIDS+=("$m")
    wait_port $POSTFIX_PORT
}
stop_current_postfix() { [ -n "$PF" ] && stop_postfix "$PF"; PF=; }

SINK_PIDS=()
start_sink() { # PORT ARGS... (bench/tools/sink.py)
    local port=$1; shift
    $SINK "$port" "$@" >/dev/null 2>&1 &
    PIDS+=($!); SINK_PIDS+=($!)
    wait_port "$port"
}
start_smtp_sink() { # PORT OUTFILE
    smtp-sink -u postfix -c "127.0.0.1:$1" 1000 > "$2" 2>&1 &
    PIDS+=($!); SINK_PIDS+=($!)
    wait_port "$1"
}
stop_sinks() { local p; for p in "${SINK_PIDS[@]:-}"; do [ -n "$p" ] && { kill "$p" 2>/dev/null; wait_gone "$p" 5 || kill -9 "$p" 2>/dev/null; }; done; SINK_PIDS=(); true; }

relay_pids() { echo "$RELAY_PID"; }
postfix_pids() { postfix_all_pids "$PF"; }

# sink_stat FILE KEY → a counter from sink.py's --stats file
sink_stat() { local v; v=$(sed -n "s/.*\b$2=\([0-9]*\).*/\1/p" "$1" 2>/dev/null | head -1); echo "${v:-0}"; }
smtp_sink_count() { local v; v=$(tail -c 300 "$1" 2>/dev/null | tr '\r' '\n' | grep -o 'mesg=[0-9]*' | tail -1 | cut -d= -f2); echo "${v:-0}"; }

# wait_until TIMEOUT_S CMD... : poll every 50 ms until CMD succeeds; 1 on timeout
wait_until() { local limit; limit=$(calc "$(now) + $1"); shift
    until "$@"; do sleep 0.05; is_true "$(now) > $limit" && return 1; done; return 0; }

source_run() { # PORT SESSIONS COUNT RCPTS TO → elapsed seconds (every message got its 250)
    local t0; t0=$(now)
    smtp-source -N -s "$2" -m "$3" -l 4096 -r "$4" -f bench@sender.test -t "$5" "127.0.0.1:$1" >"$TMP/smtp-source.log" 2>&1 \
        || { echo "smtp-source failed:" >&2; tail -5 "$TMP/smtp-source.log" >&2; return 1; }
    calc "$(now) - $t0"
}

declare -A R   # results, keyed by name

# ---------------------------------------------------------------------------------------------
phase_ingest() {
    log "ingest: $INGEST_N messages per run, 4 KiB, sessions 1/20/100, 1 and 5 recipients"
    start_relay "$(relay_config ingest true "{ else = \"'sink'\" }" "$(smart_host sink 9)" "$(simple_queues 1h)")"
    start_postfix ingest "relayhost = [127.0.0.1]:9
defer_transports = smtp"
    local rc s t c0 c1
    for rc in 1 5; do
        for s in 1 20 100; do
            c0=$(proc_ticks $(relay_pids)); t=$(source_run $RELAY_PORT "$s" "$INGEST_N" "$rc" rcpt@remote.test); c1=$(proc_ticks $(relay_pids))
            R[ingest_r_${s}_$rc]=$(calc "$INGEST_N / $t"); R[ingest_rc_${s}_$rc]=$(calc "($c1 - $c0) * 1000 / $HZ / $INGEST_N")
            c0=$(proc_ticks $(postfix_pids)); t=$(source_run $POSTFIX_PORT "$s" "$INGEST_N" "$rc" rcpt@remote.test); c1=$(proc_ticks $(postfix_pids))
            R[ingest_p_${s}_$rc]=$(calc "$INGEST_N / $t"); R[ingest_pc_${s}_$rc]=$(calc "($c1 - $c0) * 1000 / $HZ / $INGEST_N")
            log "  $s sessions, $rc rcpt: Relay $(fmt0 "${R[ingest_r_${s}_$rc]}") msg/s, Postfix $(fmt0 "${R[ingest_p_${s}_$rc]}") msg/s"
        done
    done
    stop_relay; stop_current_postfix
}

# e2e_measure NAME PORT PIDFN: smtp-source → MTA → smtp-sink; sets R[e2e_NAME_*]
e2e_measure() {
    local name=$1 port=$2 pidfn=$3 base target t0 b0 c0 t1 b1 c1 rss
    base=$(smtp_sink_count "$TMP/e2e/sink.out"); target=$((base + E2E_N))
    [ -n "$pidfn" ] && { start_rss_sampler "$TMP/e2e/$name.rss" $pidfn; c0=$(proc_ticks $($pidfn)); }
    b0=$(busy_ticks); t0=$(now)
    source_run "$port" "$E2E_S" "$E2E_N" 1 rcpt@remote.test >/dev/null
    sink_done() { [ "$(smtp_sink_count "$TMP/e2e/sink.out")" -ge "$target" ]; }
    wait_until 900 sink_done || { echo "e2e $name: timeout, sink has $(smtp_sink_count "$TMP/e2e/sink.out") of $target" >&2; return 1; }
    t1=$(now); b1=$(busy_ticks)
    R[e2e_${name}]=$(calc "$E2E_N / ($t1 - $t0)")
    R[e2e_${name}_machine]=$(calc "($b1 - $b0) * 1000 / $HZ / $E2E_N")
    if [ -n "$pidfn" ]; then
        c1=$(proc_ticks $($pidfn)); stop_rss_sampler
        R[e2e_${name}_cpu]=$(calc "($c1 - $c0) * 1000 / $HZ / $E2E_N")
        read -r R[e2e_${name}_rss_sum] R[e2e_${name}_pss_sum] < "$TMP/e2e/$name.rss"
    fi
    log "  $name: $(fmt0 "${R[e2e_$name]}") msg/s"
}

phase_e2e() {
    log "e2e: $E2E_N messages, 4 KiB, 1 rcpt, $E2E_S sessions → MTA → smtp-sink ($CONC connections)"
    mkdir -p "$TMP/e2e"
    start_smtp_sink $SINK_PORT "$TMP/e2e/sink.out"
    e2e_measure ceiling $SINK_PORT ""
    start_relay "$(relay_config e2e false "{ else = \"'sink'\" }" "$(smart_host sink $SINK_PORT)" "$(simple_queues 10s)")"
    e2e_measure relay $RELAY_PORT relay_pids
    R[e2e_relay_hwm]=$(awk '/^VmHWM/{print $2}' /proc/$RELAY_PID/status)
    stop_relay
    start_postfix e2e "relayhost = [127.0.0.1]:$SINK_PORT"
    e2e_measure postfix $POSTFIX_PORT postfix_pids
    R[e2e_postfix_hwm]=$(postfix_all_pids "$PF" | while read -r p; do awk '/^VmHWM/{print $2}' /proc/$p/status 2>/dev/null; done | awk '{s+=$1} END{print s+0}')
    stop_current_postfix
    stop_sinks
}

# lanes_run NAME PORT PIDFN: bulk backlog to the slow sink, then urgent messages; sets R[lanes_NAME_*]
lanes_run() {
    local name=$1 port=$2 pidfn=$3 d=$TMP/lanes-$1 t res
    start_rss_sampler "$d/rss" $pidfn
    start_sink $SLOW_PORT --delay $BULK_DELAY --stats "$d/slow.stats"
    start_sink $URGENT_PORT --log "$d/urgent.log" --stats "$d/urgent.stats"
    t=$(source_run "$port" 100 "$BACKLOG" 1 bulk@bulk.test)
    R[lanes_${name}_inject]=$t
    # The slow sink drained some while we injected: top up so that at least BACKLOG wait when the
    # urgent mail starts (the first top-up adds what was drained plus 2 s worth of draining).
    local injected=$BACKLOG more i
    for i in 1 2 3; do
        more=$((BACKLOG + 2 * CONC / BULK_DELAY - (injected - $(sink_stat "$d/slow.stats" messages))))
        [ "$more" -le $((2 * CONC / BULK_DELAY)) ] && break
        source_run "$port" 100 "$more" 1 bulk@bulk.test >/dev/null
        injected=$((injected + more))
    done
    R[lanes_${name}_injected]=$injected
    R[lanes_${name}_backlog]=$((injected - $(sink_stat "$d/slow.stats" messages)))
    log "  $name: $BACKLOG bulk messages injected in $(fmt1 "$t") s ($injected with top-ups); backlog ${R[lanes_${name}_backlog]}; sending $URGENT urgent"
    $PY bench/tools/urgent.py send "$port" "$URGENT" $URGENT_INTERVAL "$d/urgent.sent"
    urgent_done() { [ "$(sink_stat "$d/urgent.stats" messages)" -ge "$URGENT" ]; }
    wait_until $URGENT_WAIT urgent_done || log "  $name: only $(sink_stat "$d/urgent.stats" messages) of $URGENT urgent messages arrived within ${URGENT_WAIT} s of the last one"
    sleep 0.3   # the sink flushes its log every 0.2 s
    res=$($PY bench/tools/urgent.py report "$d/urgent.sent" "$d/urgent.log" --timeout $URGENT_WAIT)
    R[lanes_${name}]=$res
    R[lanes_${name}_bulk_done]=$(sink_stat "$d/slow.stats" messages)
    stop_rss_sampler
    read -r R[lanes_${name}_rss_sum] R[lanes_${name}_pss_sum] < "$d/rss"
    log "  $name: urgent $res; bulk delivered so far ${R[lanes_${name}_bulk_done]}"
}

phase_lanes() {
    log "lanes: $BACKLOG bulk (100 sessions) to a sink answering after ${BULK_DELAY}s, then $URGENT urgent, ${URGENT_INTERVAL}s apart"
    local routes="{ if = \"rcpt_domain == 'urgent.test'\", then = \"'urgent'\" }, { if = \"rcpt_domain == 'sender.test'\", then = \"'dsn'\" }, { else = \"'bulk'\" }"
    local hosts; hosts="$(smart_host urgent $URGENT_PORT)
$(smart_host bulk $SLOW_PORT)
$(smart_host dsn $DSN_PORT)"
    # The shipped config's lanes (config/config.toml): urgent by priority, everything else bulk here.
    local queues='[queue.strategy]
schedule = [ { if = "source == '"'dsn'"'", then = "'"'dsn'"'" },
             { if = "priority >= 6", then = "'"'urgent'"'" },
             { else = "'"'bulk'"'" } ]
[queue.schedule.urgent]
retry = ["30s", "1m", "2m", "5m"]
notify = ["10m"]
expire = "4h"
[queue.schedule.bulk]
retry = ["10m", "30m", "1h", "4h"]
notify = []
expire = "3d"
[queue.schedule.dsn]
retry = ["5m"]
notify = []
max-attempts = 10
[queue.virtual.urgent]
threads-per-node = 200
priority-aging = "10s"
[queue.virtual.bulk]
threads-per-node = 20
priority-aging = "5m"
[queue.virtual.dsn]
threads-per-node = 10'
    mkdir -p "$TMP/lanes-relay" "$TMP/lanes-postfix"
    start_relay "$(relay_config lanes false "$routes" "$hosts" "$queues")"
    lanes_run relay $RELAY_PORT relay_pids
    R[lanes_relay_hwm]=$(awk '/^VmHWM/{print $2}' /proc/$RELAY_PID/status)
    stop_relay; stop_sinks
    # Postfix has no priority: urgent mail gets its own next hop (a destination of its own in qmgr).
    # in_flow_delay = 0: with the default 1 s, once the active queue is full (20,000) every smtpd
    # waits 1 s per message and the backlog could not be injected within the time budget.
    printf 'urgent.test smtp:[127.0.0.1]:%s\nbulk.test smtp:[127.0.0.1]:%s\nsender.test smtp:[127.0.0.1]:%s\n' \
        $URGENT_PORT $SLOW_PORT $DSN_PORT > "$TMP/lanes-postfix/transport"
    start_postfix lanes-postfix "transport_maps = texthash:$TMP/lanes-postfix/transport
in_flow_delay = 0s"
    lanes_run postfix $POSTFIX_PORT postfix_pids
    stop_current_postfix; stop_sinks
}

# real_run NAME PORT PIDFN
real_run() {
    local name=$1 port=$2 pidfn=$3 d=$TMP/real-$1 t0 t1 c0 c1
    mkdir -p "$d"
    start_sink $SINK_PORT --delay 0.05 --temp 20:3 --perm 50:7 --stats "$d/sink.stats"
    start_sink $DSN_PORT --stats "$d/dsn.stats"
    c0=$(proc_ticks $($pidfn)); t0=$(now)
    source_run "$port" "$E2E_S" "$REAL_N" 1 rcpt@remote.test >/dev/null
    real_done() { [ $(( $(sink_stat "$d/sink.stats" unique) + $(sink_stat "$d/dsn.stats" messages) )) -ge "$REAL_N" ]; }
    wait_until 600 real_done || log "  $name: timeout: delivered $(sink_stat "$d/sink.stats" unique), DSNs $(sink_stat "$d/dsn.stats" messages) of $REAL_N"
    t1=$(now); c1=$(proc_ticks $($pidfn))
    R[real_${name}]=$(calc "$REAL_N / ($t1 - $t0)")
    R[real_${name}_cpu]=$(calc "($c1 - $c0) * 1000 / $HZ / $REAL_N")
    R[real_${name}_delivered]=$(sink_stat "$d/sink.stats" unique)
    R[real_${name}_dup]=$(( $(sink_stat "$d/sink.stats" rcpts) - $(sink_stat "$d/sink.stats" unique) ))
    R[real_${name}_retried]=$(sink_stat "$d/sink.stats" temp)
    R[real_${name}_bounced]=$(sink_stat "$d/sink.stats" perm)
    R[real_${name}_dsns]=$(sink_stat "$d/dsn.stats" messages)
    log "  $name: $(fmt0 "${R[real_$name]}") msg/s; delivered ${R[real_${name}_delivered]}, 4xx ${R[real_${name}_retried]}, 5xx ${R[real_${name}_bounced]}, DSNs ${R[real_${name}_dsns]}"
}

phase_realistic() {
    log "realistic: $REAL_N messages, $E2E_S sessions → MTA → sink (50 ms/msg, 4xx once to 5 %, 5xx to 2 %), retry 2 s"
    local routes="{ if = \"rcpt_domain == 'sender.test'\", then = \"'dsn'\" }, { else = \"'sink'\" }"
    local hosts; hosts="$(smart_host sink $SINK_PORT)
$(smart_host dsn $DSN_PORT)"
    start_relay "$(relay_config real-relay false "$routes" "$hosts" "$(simple_queues 2s)")"
    real_run relay $RELAY_PORT relay_pids
    stop_relay; stop_sinks
    mkdir -p "$TMP/real-postfix"
    printf 'remote.test smtp:[127.0.0.1]:%s\nsender.test smtp:[127.0.0.1]:%s\n' $SINK_PORT $DSN_PORT > "$TMP/real-postfix/transport"
    start_postfix real-postfix "transport_maps = texthash:$TMP/real-postfix/transport
queue_run_delay = 2s
minimal_backoff_time = 2s
maximal_backoff_time = 4s"
    real_run postfix $POSTFIX_PORT postfix_pids
    stop_current_postfix; stop_sinks
}

for phase in $PHASES; do
    case $phase in
        ingest|e2e|lanes|realistic) t=$(now); "phase_$phase"; log "$phase took $(fmt0 "$(calc "$(now) - $t")") s" ;;
        *) echo "unknown phase $phase (ingest e2e lanes realistic)" >&2; exit 2 ;;
    esac
done

# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------
TOTAL=$(calc "$(now) - $SUITE_T0")
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
ratio() { [ -n "${1:-}" ] && [ -n "${2:-}" ] && fmt2 "$(calc "$1 / $2")" || echo "—"; }
mib() { [ -n "${1:-}" ] && fmt0 "$(calc "$1 / 1024")" || echo "—"; }
lat() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
report() {
    echo "# Benchmark suite $DATE$([ "$QUICK" = 1 ] && echo " (BENCH_QUICK — small counts, not for comparison)")"
    echo
    echo "Command: \`$([ "$QUICK" = 1 ] && echo "BENCH_QUICK=1 ")bench/run.sh\` (phases: $PHASES), $(fmt0 "$TOTAL") s in all."
    echo "Machine: $(nproc) cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)), $(free -m | awk '/^Mem:/{print $2}') MiB RAM,"
    echo "$(. /etc/os-release; echo "$PRETTY_NAME"), $(dotnet --version | sed 's/^/.NET SDK /'), Postfix $(postconf -dh mail_version)."
    echo "Commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')."
    echo "Load average (1/5/15 min) at start $LOAD_START, at end $LOAD_END.${BENCH_NOTE:+ $BENCH_NOTE}"
    echo
    if [[ " $PHASES " == *" ingest "* ]]; then
        echo "## Ingest: smtp-source → MTA, $INGEST_N messages per run, 4 KiB, one connection per message"
        echo
        echo "Relay: durable spool, \`[delivery] hold = true\`. Postfix: \`defer_transports = smtp\`. Both fsync every accepted message."
        echo "CPU is the MTA's own (Relay process; Postfix master + all children, exited ones through master's cutime) during smtp-source's run."
        echo
        echo "| sessions | rcpts | Relay msg/s | Postfix msg/s | Relay/Postfix | Relay CPU ms/msg | Postfix CPU ms/msg |"
        echo "|---|---|---|---|---|---|---|"
        for rc in 1 5; do for s in 1 20 100; do
            echo "| $s | $rc | $(fmt0 "${R[ingest_r_${s}_$rc]}") | $(fmt0 "${R[ingest_p_${s}_$rc]}") | $(ratio "${R[ingest_r_${s}_$rc]}" "${R[ingest_p_${s}_$rc]}")× | $(fmt2 "${R[ingest_rc_${s}_$rc]}") | $(fmt2 "${R[ingest_pc_${s}_$rc]}") |"
        done; done
        echo
    fi
    if [[ " $PHASES " == *" e2e "* ]]; then
        echo "## End to end: smtp-source → MTA → smtp-sink, $E2E_N messages, 4 KiB, 1 rcpt, $E2E_S sessions, $CONC connections to the sink"
        echo
        echo "msg/s from smtp-source's start until smtp-sink has counted every message. MTA CPU: as above, over the same window."
        echo "Machine CPU: busy time of the whole machine (/proc/stat) over the window — includes smtp-source, smtp-sink and other load."
        echo "Peak memory: Relay = the process's peak RSS (VmHWM). Postfix = the highest sum of Pss (proportional set size:"
        echo "shared pages split between the processes sharing them) over master and all its children, sampled every 0.25 s."
        echo "In brackets: the highest sampled sum of RSS, which counts the shared libraries once per process (for Relay the"
        echo "sampled Pss and RSS), and for Postfix the sum of every process's own peak RSS (an upper bound)."
        echo
        echo "| path | msg/s | MTA CPU ms/msg | MTA CPU s per 10,000 msgs | machine CPU ms/msg | peak memory MiB |"
        echo "|---|---|---|---|---|---|"
        echo "| smtp-source → smtp-sink (ceiling) | $(fmt0 "${R[e2e_ceiling]:-}") | — | — | $(fmt2 "${R[e2e_ceiling_machine]:-}") | — |"
        echo "| → Relay → smtp-sink | $(fmt0 "${R[e2e_relay]:-}") | $(fmt2 "${R[e2e_relay_cpu]:-}") | $(fmt1 "$(calc "${R[e2e_relay_cpu]:-0} * 10")") | $(fmt2 "${R[e2e_relay_machine]:-}") | $(mib "${R[e2e_relay_hwm]:-}") RSS (sampled Pss $(mib "${R[e2e_relay_pss_sum]:-}"), RSS $(mib "${R[e2e_relay_rss_sum]:-}")) |"
        echo "| → Postfix → smtp-sink | $(fmt0 "${R[e2e_postfix]:-}") | $(fmt2 "${R[e2e_postfix_cpu]:-}") | $(fmt1 "$(calc "${R[e2e_postfix_cpu]:-0} * 10")") | $(fmt2 "${R[e2e_postfix_machine]:-}") | $(mib "${R[e2e_postfix_pss_sum]:-}") Pss (RSS sum $(mib "${R[e2e_postfix_rss_sum]:-}"), peak-RSS sum $(mib "${R[e2e_postfix_hwm]:-}")) |"
        echo
        echo "Relay/Postfix: throughput $(ratio "${R[e2e_relay]:-}" "${R[e2e_postfix]:-}")×, MTA CPU per message $(ratio "${R[e2e_relay_cpu]:-}" "${R[e2e_postfix_cpu]:-}")×, machine CPU per message $(ratio "${R[e2e_relay_machine]:-}" "${R[e2e_postfix_machine]:-}")×."
        echo
    fi
    if [[ " $PHASES " == *" lanes "* ]]; then
        echo "## Priority lanes: $BACKLOG bulk messages, then $URGENT urgent"
        echo
        echo "Bulk: smtp-source, 100 sessions, to bulk.test → a sink answering end-of-DATA after ${BULK_DELAY} s ($CONC connections ≈ $CONC msg/s)."
        echo "Urgent: bench/tools/urgent.py, one session, one message every ${URGENT_INTERVAL} s, \`X-Message-Priority: urgent\` and"
        echo "MT-PRIORITY=6 where offered (Relay; Postfix does not offer it), to urgent.test → a sink of its own."
        echo "Latency: from the 250 after DATA (sender's clock) to the final \".\" at the sink (same clock)."
        echo "Relay: the shipped lanes (urgent: priority ≥ 6, 200 deliveries, aging 10 s; bulk: 20). Postfix: urgent.test and"
        echo "bulk.test are separate next hops (transport_maps); in_flow_delay = 0 so the backlog can be injected in time."
        echo
        echo "| MTA | backlog injection | backlog when urgent starts | urgent arrived | p50 s | p95 s | p99 s | max s | peak memory MiB (as in e2e) |"
        echo "|---|---|---|---|---|---|---|---|---|"
        for m in relay postfix; do
            local v=${R[lanes_$m]:-}
            [ -z "$v" ] && continue
            echo "| $m | $BACKLOG in $(fmt1 "${R[lanes_${m}_inject]}") s ($(fmt0 "$(calc "$BACKLOG / ${R[lanes_${m}_inject]}")") msg/s) | ${R[lanes_${m}_backlog]} | $(lat "$v" arrived)/$(lat "$v" of) | $(lat "$v" p50) | $(lat "$v" p95) | $(lat "$v" p99) | $(lat "$v" max) | $([ $m = relay ] && echo "$(mib "${R[lanes_relay_hwm]:-}") RSS" || echo "$(mib "${R[lanes_postfix_pss_sum]:-}") Pss (RSS sum $(mib "${R[lanes_postfix_rss_sum]:-}"))") |"
        done
        echo
        echo "The backlog is injected first ($BACKLOG messages, timed), then topped up by what the slow sink drained meanwhile"
        echo "(injected in all: relay ${R[lanes_relay_injected]:-—}, postfix ${R[lanes_postfix_injected]:-—}); \"backlog\" = injected − arrived at the slow sink."
        echo "A \">${URGENT_WAIT}\" means that percentile had not arrived when the bench stopped waiting, ${URGENT_WAIT} s after the last urgent message was accepted."
        echo
    fi
    if [[ " $PHASES " == *" realistic "* ]]; then
        echo "## Realistic sink: $REAL_N messages, $E2E_S sessions, sink takes 50 ms per message, 4xx once to 5 %, 5xx to 2 % of recipients"
        echo
        echo "msg/s until every message was delivered or its bounce DSN reached the DSN sink. Retry interval 2 s in both"
        echo "(Relay retry = [\"2s\"]; Postfix queue_run_delay = minimal_backoff_time = 2s, maximal_backoff_time = 4s)."
        echo "The sink's ceiling is $CONC connections / 50 ms = $((CONC * 20)) msg/s."
        echo
        echo "| MTA | msg/s | MTA CPU ms/msg | delivered | 4xx (retried) | 5xx (bounced) | DSNs received | duplicate deliveries |"
        echo "|---|---|---|---|---|---|---|---|"
        for m in relay postfix; do
            [ -z "${R[real_$m]:-}" ] && continue
            echo "| $m | $(fmt0 "${R[real_$m]}") | $(fmt2 "${R[real_${m}_cpu]}") | ${R[real_${m}_delivered]} | ${R[real_${m}_retried]} | ${R[real_${m}_bounced]} | ${R[real_${m}_dsns]} | ${R[real_${m}_dup]} |"
        done
        echo
        echo "Relay/Postfix: $(ratio "${R[real_relay]:-}" "${R[real_postfix]:-}")× throughput, $(ratio "${R[real_relay_cpu]:-}" "${R[real_postfix_cpu]:-}")× CPU per message."
        echo
    fi
}
goals() {
    local min max e2e cpu p99
    echo "## Goals"
    echo
    echo "| goal | measured | met |"
    echo "|---|---|---|"
    if [[ " $PHASES " == *" ingest "* ]]; then
        local all=""; for rc in 1 5; do for s in 1 20 100; do all+="$(calc "${R[ingest_r_${s}_$rc]} / ${R[ingest_p_${s}_$rc]}") "; done; done
        min=$(echo $all | tr ' ' '\n' | sort -g | head -1); max=$(echo $all | tr ' ' '\n' | sort -g | tail -1)
        local met=0; for r in $all; do is_true "$r >= 3" && met=$((met + 1)); done
        echo "| ingest ≥ 3× Postfix | $(fmt2 "$min")× – $(fmt2 "$max")× over the six runs (20 sessions, 1 rcpt: $(ratio "${R[ingest_r_20_1]}" "${R[ingest_p_20_1]}")×) | $([ $met = 6 ] && echo yes || echo "**no** ($met of 6 runs)") |"
    fi
    if [[ " $PHASES " == *" e2e "* ]]; then
        e2e=$(calc "${R[e2e_relay]} / ${R[e2e_postfix]}"); cpu=$(calc "${R[e2e_relay_cpu]} / ${R[e2e_postfix_cpu]}")
        echo "| end to end ≥ 2× Postfix | $(fmt2 "$e2e")× | $(is_true "$e2e >= 2" && echo yes || echo "**no**") |"
        echo "| … at ≤ ½ Postfix's CPU per message | $(fmt2 "$cpu")× (MTA CPU; machine CPU $(ratio "${R[e2e_relay_machine]}" "${R[e2e_postfix_machine]}")×) | $(is_true "$cpu <= 0.5" && echo yes || echo "**no**") |"
        echo "| peak RSS under load ≤ 200 MiB | $(mib "${R[e2e_relay_hwm]}") MiB in the e2e run$([ -n "${R[lanes_relay_hwm]:-}" ] && echo "; $(mib "${R[lanes_relay_hwm]}") MiB holding the lanes backlog") | $(is_true "${R[e2e_relay_hwm]} <= 204800 && ${R[lanes_relay_hwm]:-0} <= 204800" && echo yes || echo "**no**") |"
    fi
    if [[ " $PHASES " == *" lanes "* ]]; then
        p99=$(lat "${R[lanes_relay]}" p99)
        echo "| urgent p99 < 1 s with a ≥ 50,000 backlog | $p99 s (backlog ${R[lanes_relay_backlog]}; Postfix $(lat "${R[lanes_postfix]:-}" p99) s) | $( [[ $p99 != ">"* ]] && is_true "$p99 < 1" && [ "${R[lanes_relay_backlog]}" -ge 50000 ] && echo yes || echo "**no**") |"
    fi
    echo
}
mkdir -p "$(dirname "$OUT")"
{ report; goals; } | tee "$OUT"
log "written to $OUT"
