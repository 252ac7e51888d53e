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

need() { command -v "$1" >/dev/null 2>&1; }
if ! need smtp-source; then
    echo "installing postfix (for smtp-source and the peer MTA)" >&2
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null
fi

pids=()
cleanup() {
    for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    [ -f "$TMP/postfix/main.cf" ] && postfix -c "$TMP/postfix" stop >/dev/null 2>&1 || true
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
mkdir -p "$PF/queue" "$PF/data"
cp /etc/postfix/master.cf "$PF/master.cf"
sed -i "s/^smtp      inet  n       -       y       -       -       smtpd/$POSTFIX_PORT      inet  n       -       n       -       -       smtpd/" "$PF/master.cf"
cat > "$PF/main.cf" <<CF
compatibility_level = 3.6
queue_directory = $PF/queue
data_directory = $PF/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.bench.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:9
defer_transports = smtp
smtp_dns_support_level = disabled
disable_dns_lookups = yes
smtpd_peername_lookup = no
maillog_file_prefixes = $PF
maillog_file = $PF/maillog
default_process_limit = 200
smtpd_client_connection_count_limit = 0
CF
chown -R postfix "$PF/data"
postfix -c "$PF" check >/dev/null 2>&1 || true
script -qc "postfix -c $PF start" /dev/null || { echo "postfix did not start" >&2; exit 1; }

wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.2; done; echo "port $1 not up" >&2; return 1; }
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
