#!/usr/bin/python3
"""A local HTTP receiver for webhook tests: records every POST (path, Content-Type, body) and
answers 200, or 500 for the first --fail-first requests.

  http_receiver.py --listen 127.0.0.1:0 --ready-file PATH [--fail-first N]
  GET /_tripline/received   what was posted so far (JSON list)

Loopback only; exits 0 on SIGTERM.
"""

import argparse
import ipaddress
import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 1 << 20


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def _send(self, status, body):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path != "/_tripline/received":
            self._send(404, "{}")
            return
        with self.server.lock:
            self._send(200, json.dumps(self.server.received))

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        if not 0 <= length <= MAX_BODY:
            self._send(413, "{}")
            return
        body = self.rfile.read(length).decode("utf-8", "replace")
        with self.server.lock:
            self.server.seen += 1
            fail = self.server.seen <= self.server.fail_first
            self.server.received.append({"path": self.path, "status": 500 if fail else 200,
                                         "content_type": self.headers.get("Content-Type", ""),
                                         "body": body})
        self._send(500 if fail else 200, '{"ok": %s}' % ("false" if fail else "true"))


def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True)
    ap.add_argument("--ready-file", required=True)
    ap.add_argument("--fail-first", type=int, default=0)
    args = ap.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    if not ipaddress.ip_address(host).is_loopback:
        print("http_receiver: refusing a non-loopback address", file=sys.stderr)
        return 2
    server = ThreadingHTTPServer((host, int(port)), Handler)
    server.daemon_threads = True
    server.lock = threading.Lock()
    server.received = []
    server.seen = 0
    server.fail_first = args.fail_first
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2})
    thread.start()
    tmp = args.ready_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{server.server_address[0]}:{server.server_address[1]}\n")
    os.rename(tmp, args.ready_file)
    stop.wait()
    server.shutdown()
    thread.join()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
