# Shared by the bench scripts: installing the load tools, a private Postfix peer, small helpers.
# Source it after `cd` to the repository root.

# smtp-source/smtp-sink and the Postfix peer come from Debian's postfix package; preseed
# "No configuration" so no system MTA starts.
ensure_postfix_tools() {
    command -v smtp-source >/dev/null 2>&1 && return 0
    echo "installing postfix (smtp-source, smtp-sink, peer MTA)" >&2
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null
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
$extra
CF
    chown -R postfix "$pf/data"
    # postfix(1) reports fatal errors only to syslog or a terminal: give it a terminal.
    script -qc "postfix -c $pf start" /dev/null >/dev/null || { echo "postfix did not start (see: script -qc 'postfix -c $pf start' /dev/null)" >&2; return 1; }
}

stop_private_postfix() { [ -f "$1/main.cf" ] && postfix -c "$1" stop >/dev/null 2>&1 || true; }

wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.2; done; echo "port $1 not up" >&2; return 1; }

# CPU ticks (user+system, children included) of the given pids.
proc_ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14+$15+$16+$17}' /proc/$p/stat 2>/dev/null || echo 0))); done; echo $t; }
