# Sourced by bench/run.sh (the ingest and e2e wrappers run it): installing the load tools, a private Postfix peer, process and
# measurement helpers. Source it after `cd` to the repository root.

log() { echo "[$(date +%T)] $*" >&2; }
now() { echo "$EPOCHREALTIME"; }
calc() { awk "BEGIN { printf \"%.6f\", ($*) }"; }
is_true() { awk "BEGIN { exit !($*) }"; }
fmt() { [ -n "${2:-}" ] && LC_ALL=C printf "%.${1}f" "$2" || echo "—"; }
fmt0() { fmt 0 "${1:-}"; }
fmt1() { fmt 1 "${1:-}"; }
fmt2() { fmt 2 "${1:-}"; }

# smtp-source/smtp-sink and the Postfix peer come from Debian's postfix package; preseed
# "No configuration" so no system MTA starts.
ensure_postfix_tools() {
    command -v smtp-source >/dev/null 2>&1 && command -v postfix >/dev/null 2>&1 && return 0
    echo "installing postfix (smtp-source, smtp-sink, peer MTA)" >&2
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null
}
# The sinks and the urgent sender are small standard-library Python programs (bench/tools); pgrep
# and free come from procps, which slim images leave out.
ensure_python() {
    local missing=()
    command -v python3 >/dev/null 2>&1 || missing+=(python3)
    command -v pgrep >/dev/null 2>&1 && command -v free >/dev/null 2>&1 || missing+=(procps)
    [ ${#missing[@]} = 0 ] && return 0
    echo "installing ${missing[*]}" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# start_private_postfix DIR PORT EXTRA_MAIN_CF: a Postfix instance with its own config, queue and
# data directories under DIR, smtpd on 127.0.0.1:PORT, no DNS, logging to DIR/maillog.
start_private_postfix() {
    local pf=$1 port=$2 extra=$3
    mkdir -p "$pf/queue" "$pf/data"
    cp /etc/postfix/master.cf "$pf/master.cf"
    sed -i "s/^smtp      inet  n       -       y       -       -       smtpd/$port      inet  n       -       n       -       -       smtpd/" "$pf/master.cf"
    cat > "$pf/main.cf" <<CF
compatibility_level = 3.6
queue_directory = $pf/queue
data_directory = $pf/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.bench.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtp_dns_support_level = disabled
disable_dns_lookups = yes
smtpd_peername_lookup = no
maillog_file_prefixes = $pf
maillog_file = $pf/maillog
default_process_limit = 200
smtpd_client_connection_count_limit = 0
alias_maps =
alias_database =
$extra
${BENCH_POSTFIX_EXTRA:-}
CF
    chown -R postfix "$pf/data"
    # postfix(1) reports fatal errors only to syslog or a terminal: give it a terminal.
    script -qc "postfix -c $pf start" /dev/null >/dev/null || { echo "postfix did not start (see: script -qc 'postfix -c $pf start' /dev/null)" >&2; return 1; }
}

# The master's pid, then every child of it (all Postfix daemons are children of master).
postfix_master() { local f=$1/queue/pid/master.pid; [ -f "$f" ] && tr -d ' \n' < "$f"; true; }
postfix_all_pids() {
    local m; m=$(postfix_master "$1")
    [ -n "$m" ] && [ -e "/proc/$m" ] || return 0
    echo "$m"; pgrep -P "$m" || true
}
# stop_postfix DIR: postfix stop, then SIGKILL whatever of its processes is still there after 10 s.
stop_postfix() {
    local pf=$1 pids p
    pids=$(postfix_all_pids "$pf")
    [ -z "$pids" ] && return 0
    postfix -c "$pf" stop >/dev/null 2>&1 || true
    for p in $pids; do wait_gone "$p" 10 || kill -9 "$p" 2>/dev/null || true; done
}

# wait_gone PID SECONDS: 0 once the process has exited (a zombie child is reaped), 1 on timeout.
wait_gone() {
    local p=$1 i
    for ((i = 0; i < $2 * 20; i++)); do
        if [ ! -e "/proc/$p" ] || [ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" = Z ]; then
            wait "$p" 2>/dev/null || true
            return 0
        fi
        sleep 0.05
    done
    return 1
}

wait_port() { for _ in $(seq 150); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.2; done; echo "port $1 not up" >&2; return 1; }

# CPU ticks (user+system, reaped children included) of the given pids. For Postfix pass master and
# its live children: a daemon that exited was reaped by master, so its ticks are in master's cutime.
proc_ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14+$15+$16+$17}' /proc/$p/stat 2>/dev/null || echo 0))); done; echo $t; }
# Busy ticks of the whole machine.
busy_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }

# start_rss_sampler FILE PIDFN: every 0.25 s sum VmRSS and Pss (KiB) over the pids PIDFN prints; FILE
# holds "<highest RSS sum> <highest Pss sum>". Summed RSS counts shared pages (libraries, Postfix's
# shared text) once per process; Pss (/proc/PID/smaps_rollup) splits them, so its sum is the real
# footprint of a multi-process MTA. stop_rss_sampler ends it; its pid is in PIDS (cleanup kills it).
RSS_SAMPLER=
start_rss_sampler() {
    local file=$1 fn=$2
    echo "0 0" > "$file"
    ( rss_max=0; pss_max=0
      while :; do
          files=$(for p in $($fn); do echo "/proc/$p/status /proc/$p/smaps_rollup"; done)
          read -r rss pss < <(echo "$files" | xargs -r cat 2>/dev/null | awk '/^VmRSS:/{r+=$2} /^Pss:/{p+=$2} END{print r+0, p+0}')
          [ "$rss" -gt "$rss_max" ] && rss_max=$rss
          [ "$pss" -gt "$pss_max" ] && pss_max=$pss
          echo "$rss_max $pss_max" > "$file.tmp" && mv "$file.tmp" "$file"
          sleep 0.25
      done ) &
    RSS_SAMPLER=$!; PIDS+=("$RSS_SAMPLER")
}
stop_rss_sampler() { [ -n "$RSS_SAMPLER" ] && { kill "$RSS_SAMPLER" 2>/dev/null; wait_gone "$RSS_SAMPLER" 5 || true; }; RSS_SAMPLER=; true; }
