#!/usr/bin/python3
"""A local SMTP server (aiosmtpd) for the e-mail notification tests: every accepted message is
appended to --out as one JSON line (mail_from, rcpt_tos, data); the first --fail-first messages
are refused with 451 (try again later).

  smtp_receiver.py --listen 127.0.0.1:0 --ready-file PATH --out FILE [--fail-first N]

Loopback only; exits 0 on SIGTERM.
"""

import argparse
import ipaddress
import json
import os
import signal
import socket
import sys
import threading

from aiosmtpd.controller import Controller


class Handler:
    def __init__(self, out, fail_first):
        self.out = out
        self.fail_first = fail_first
        self.seen = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.seen += 1
            if self.seen <= self.fail_first:
                return "451 4.3.0 Try again later"
            with open(self.out, "a", encoding="utf-8") as f:
                f.write(json.dumps({"mail_from": envelope.mail_from,
                                    "rcpt_tos": envelope.rcpt_tos,
                                    "data": envelope.content.decode("utf-8", "replace")}) + "\n")
        return "250 OK"


def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True)
    ap.add_argument("--ready-file", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--fail-first", type=int, default=0)
    args = ap.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    if not ipaddress.ip_address(host).is_loopback:
        print("smtp_receiver: refusing a non-loopback address", file=sys.stderr)
        return 2
    port = int(port)
    if port == 0:  # aiosmtpd checks readiness by connecting to the port: pick a free one
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
    controller = Controller(Handler(args.out, args.fail_first), hostname=host, port=port)
    controller.start()
    tmp = args.ready_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{host}:{port}\n")
    os.rename(tmp, args.ready_file)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    controller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
