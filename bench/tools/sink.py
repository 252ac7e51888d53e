#!/usr/bin/env python3
"""A small SMTP sink for bench/run.sh (standard library only).

Accepts mail on 127.0.0.1:PORT and counts it. Optional behaviour:
  --delay S            wait S seconds before answering the end of DATA (a slow or realistic remote)
  --temp M:R           answer 451 4.3.0 to a recipient whose sequence n has n % M == R, on its first
                       attempt only (the retry is accepted), so every such recipient is retried once
  --perm M:R           answer 550 5.1.1 to a recipient whose sequence n has n % M == R (it bounces)
  --log FILE           one line per accepted message: "<arrival unix time> <X-Bench-Seq or -> <rcpts>",
                       the time taken when the final "." arrived (before --delay)
  --stats FILE         "messages=.. rcpts=.. unique=.. temp=.. perm=.." rewritten every 0.2 s

A recipient's sequence is the number its local part starts with (smtp-source -N writes 1rcpt@, 2rcpt@,
...); a recipient without one uses the sink's own RCPT counter. The failure pattern is therefore the
same for every MTA given the same smtp-source run.
"""
import argparse
import asyncio
import os
import re
import time

SEQ = re.compile(r"<?(\d+)")


class Sink:
    def __init__(self, args):
        self.args = args
        self.temp = tuple(map(int, args.temp.split(":"))) if args.temp else None
        self.perm = tuple(map(int, args.perm.split(":"))) if args.perm else None
        self.messages = self.rcpts = self.temp_replies = self.perm_replies = 0
        self.delivered = set()      # sequences accepted at least once
        self.tempfailed = set()     # sequences already given their one 4xx
        self.rcpt_counter = 0
        self.log = open(args.log, "a", buffering=1 << 16) if args.log else None

    def decide(self, address):
        self.rcpt_counter += 1
        m = SEQ.match(address.split("@", 1)[0].strip())
        n = int(m.group(1)) if m else self.rcpt_counter
        if self.perm and n % self.perm[0] == self.perm[1]:
            self.perm_replies += 1
            return n, b"550 5.1.1 <%s>: no such user (bench)\r\n" % address.encode()
        if self.temp and n % self.temp[0] == self.temp[1] and n not in self.tempfailed:
            self.tempfailed.add(n)
            self.temp_replies += 1
            return n, b"451 4.3.0 <%s>: try again later (bench)\r\n" % address.encode()
        return n, None

    async def session(self, reader, writer):
        w = writer.write
        w(b"220 sink.bench.test ESMTP bench sink\r\n")
        accepted = []
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                verb = line[:4].upper()
                if verb == b"EHLO":
                    w(b"250-sink.bench.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 SIZE 104857600\r\n")
                elif verb == b"HELO":
                    w(b"250 sink.bench.test\r\n")
                elif verb == b"MAIL":
                    accepted = []
                    w(b"250 2.1.0 Ok\r\n")
                elif verb == b"RCPT":
                    text = line.decode("ascii", "replace")
                    address = text.split(":", 1)[1].strip().split(" ", 1)[0].strip("<>") if ":" in text else ""
                    n, refusal = self.decide(address)
                    if refusal:
                        w(refusal)
                    else:
                        accepted.append(n)
                        w(b"250 2.1.5 Ok\r\n")
                elif verb == b"DATA":
                    if not accepted:
                        w(b"554 5.5.1 no valid recipients\r\n")
                        continue
                    w(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    await writer.drain()
                    seq = b"-"
                    in_header = True
                    while True:
                        data = await reader.readline()
                        if not data or data == b".\r\n" or data == b".\n":
                            break
                        if in_header:
                            if data in (b"\r\n", b"\n"):
                                in_header = False
                            elif data[:12].lower() == b"x-bench-seq:":
                                seq = data[12:].strip()
                    if not data:
                        break
                    arrived = time.time()
                    if self.args.delay:
                        await asyncio.sleep(self.args.delay)
                    self.messages += 1
                    self.rcpts += len(accepted)
                    self.delivered.update(accepted)
                    if self.log:
                        self.log.write("%.6f %s %d\n" % (arrived, seq.decode("ascii", "replace"), len(accepted)))
                    accepted = []
                    w(b"250 2.0.0 Ok: queued\r\n")
                elif verb == b"RSET":
                    accepted = []
                    w(b"250 2.0.0 Ok\r\n")
                elif verb == b"NOOP":
                    w(b"250 2.0.0 Ok\r\n")
                elif verb == b"QUIT":
                    w(b"221 2.0.0 Bye\r\n")
                    break
                else:
                    w(b"502 5.5.2 command not recognized\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            try:
                await writer.drain()
                writer.close()
            except Exception:
                pass

    def write_stats(self):
        if self.log:
            self.log.flush()
        if not self.args.stats:
            return
        tmp = self.args.stats + ".tmp"
        with open(tmp, "w") as f:
            f.write("messages=%d rcpts=%d unique=%d temp=%d perm=%d\n" % (
                self.messages, self.rcpts, len(self.delivered), self.temp_replies, self.perm_replies))
        os.replace(tmp, self.args.stats)

    async def run(self):
        server = await asyncio.start_server(self.session, "127.0.0.1", self.args.port, backlog=1024)
        async with server:
            while True:
                self.write_stats()
                await asyncio.sleep(0.2)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("port", type=int)
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--temp")
    p.add_argument("--perm")
    p.add_argument("--log")
    p.add_argument("--stats")
    args = p.parse_args()
    try:
        asyncio.run(Sink(args).run())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
