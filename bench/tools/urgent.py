#!/usr/bin/env python3
"""Urgent-mail sender and latency report for bench/run.sh (standard library only).

  urgent.py send PORT COUNT INTERVAL OUT [--domain urgent.test] [--size 4096]
      One SMTP session to 127.0.0.1:PORT; message i (1..COUNT) goes to i@DOMAIN with the headers
      "X-Bench-Seq: i" and "X-Message-Priority: urgent", and MT-PRIORITY=6 on MAIL FROM when the server
      advertises MT-PRIORITY (RFC 6710; Postfix does not). Messages start INTERVAL seconds apart.
      OUT gets "<i> <unix time of the 250 after DATA>" per message.
  urgent.py report SENT ARRIVALS [--timeout S]
      Joins the sender's log with the sink's --log (first arrival of each sequence) and prints
      "arrived=N of=M p50=.. p95=.. p99=.. max=.." in seconds; a message that never arrived counts as
      later than every one that did, and a percentile that falls on one is printed as ">S" (S = the
      time the bench waited).
"""
import argparse
import math
import smtplib
import sys
import time


def send(args):
    body = ("X" * 76 + "\r\n") * max(1, args.size // 78)
    out = open(args.out, "w")
    s = smtplib.SMTP("127.0.0.1", args.port, local_hostname="app.bench.test", timeout=60)
    s.ehlo()
    options = ["MT-PRIORITY=6"] if s.has_extn("mt-priority") else []
    start = time.time()
    for i in range(1, args.count + 1):
        pause = start + (i - 1) * args.interval - time.time()
        if pause > 0:
            time.sleep(pause)
        msg = ("From: <app@sender.test>\r\nTo: <%d@%s>\r\nSubject: urgent %d\r\n"
               "Message-ID: <urgent.%d.%f@app.bench.test>\r\nX-Bench-Seq: %d\r\n"
               "X-Message-Priority: urgent\r\n\r\n%s") % (i, args.domain, i, i, start, i, body)
        s.sendmail("app@sender.test", ["%d@%s" % (i, args.domain)], msg.encode("ascii"), mail_options=options)
        out.write("%d %.6f\n" % (i, time.time()))
    out.close()
    s.quit()
    print("sent %d (MT-PRIORITY %s)" % (args.count, "yes" if options else "no, header only"), file=sys.stderr)


def report(args):
    sent = {}
    for line in open(args.sent):
        seq, t = line.split()
        sent[seq] = float(t)
    arrived = {}
    for line in open(args.arrivals):
        parts = line.split()
        if len(parts) >= 2 and parts[1] in sent and parts[1] not in arrived:
            arrived[parts[1]] = float(parts[0])
    lat = sorted(max(0.0, arrived[k] - sent[k]) for k in arrived)
    n = len(sent)
    inf = float("inf")
    lat_all = lat + [inf] * (n - len(lat))

    def pct(p):
        if not lat_all:
            return "n/a"
        v = lat_all[min(n, max(1, math.ceil(p / 100.0 * n))) - 1]   # nearest rank
        return (">%g" % args.timeout) if v == inf else "%.3f" % v

    print("arrived=%d of=%d p50=%s p95=%s p99=%s max=%s" % (
        len(lat), n, pct(50), pct(95), pct(99), pct(100)))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("send")
    s.add_argument("port", type=int)
    s.add_argument("count", type=int)
    s.add_argument("interval", type=float)
    s.add_argument("out")
    s.add_argument("--domain", default="urgent.test")
    s.add_argument("--size", type=int, default=4096)
    r = sub.add_parser("report")
    r.add_argument("sent")
    r.add_argument("arrivals")
    r.add_argument("--timeout", type=float, default=0)
    args = p.parse_args()
    send(args) if args.cmd == "send" else report(args)


if __name__ == "__main__":
    main()
