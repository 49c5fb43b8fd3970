#!/usr/bin/env python3
"""http_server.py — a small HTTP service on loopback for the specs of im.http
and the webhooks plugin: it records every request and answers as its path
says, slowly, with an error, with a huge body or with garbage.

  http_server.py --port-file F --log F [--lifetime S] [--tls CERT KEY]

Listens on 127.0.0.1, port 0; writes "PORT\\n" to the port file once it
listens (renamed into place, so a reader never sees half of it), appends one
JSON object per request to the log (method, path, query, headers, body,
client port, time), and exits after --lifetime seconds (default 300) or on
SIGTERM.

Paths (query parameters in brackets):
  /ok                   200 "ok"
  /echo                 200, the request as JSON (method, path, headers, body)
  /slow [ms]            waits ms (default 1000), then 200 "slow"
  /status/N             status N, body "status N"
  /huge [bytes, chunked] a body of that many bytes ('x'), with Content-Length or chunked
  /garbage              bytes that are not HTTP, then close
  /close                closes the connection without an answer
  /redirect [to]        302 to `to` (default /ok)
  /moderate             POST {"body": ...}: "spam" -> reject, "shout" -> rewrite in capitals, else allow
  /flaky [fail, key]    the first `fail` requests with this key (default the path) answer 503, then 200
  /hook [fail, ms]      a webhook receiver: like /flaky keyed by the X-Hubu-Delivery header; waits ms first
  /headers              200 with two Set-Cookie headers and X-Test: yes
  /_log                 the requests so far, as a JSON list (not logged itself)
"""
import argparse
import json
import os
import signal
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

LOCK = threading.Lock()
COUNTS = {}  # flaky key -> requests seen
RECORDS = []
LOG_FILE = None


def record(entry):
    with LOCK:
        RECORDS.append(entry)
        if LOG_FILE:
            with open(LOG_FILE, "a") as f:
                f.write(json.dumps(entry) + "\n")


def count(key):
    with LOCK:
        COUNTS[key] = COUNTS.get(key, 0) + 1
        return COUNTS[key]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the client may reuse the connection
    server_version = "hubu-spec-http/1"

    def log_message(self, fmt, *args):  # quiet: the log file has the requests
        pass

    def reply(self, status, body=b"", headers=None, content_type="text/plain"):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or []):
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_any(self):
        url = urlsplit(self.path)
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        if url.path != "/_log":
            record({
                "method": self.command,
                "path": url.path,
                "query": q,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body.decode("utf-8", "replace"),
                "client_port": self.client_address[1],
                "time": time.time(),
            })
        p = url.path
        if p == "/ok":
            self.reply(200, "ok")
        elif p == "/echo":
            self.reply(200, json.dumps({"method": self.command, "path": p,
                                        "headers": {k.lower(): v for k, v in self.headers.items()},
                                        "body": body.decode("utf-8", "replace")}),
                       content_type="application/json")
        elif p == "/slow":
            time.sleep(min(int(q.get("ms", "1000")), 60000) / 1000.0)
            self.reply(200, "slow")
        elif p.startswith("/status/"):
            n = int(p.rsplit("/", 1)[1])
            self.reply(n, "status %d" % n)
        elif p == "/huge":
            n = min(int(q.get("bytes", "10000000")), 200000000)
            chunk = b"x" * 65536
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            if q.get("chunked"):
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Content-Length", str(n))
            self.end_headers()
            try:
                left = n
                while left > 0:
                    part = chunk[:min(left, len(chunk))]
                    if q.get("chunked"):
                        self.wfile.write(b"%x\r\n" % len(part) + part + b"\r\n")
                    else:
                        self.wfile.write(part)
                    left -= len(part)
                if q.get("chunked"):
                    self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass
            self.close_connection = True
        elif p == "/garbage":
            self.wfile.write(b"\x00\x01garbage that is not HTTP\xff\xfe\r\n\r\n")
            self.close_connection = True
        elif p == "/close":
            self.close_connection = True
        elif p == "/redirect":
            self.reply(302, "", [("Location", q.get("to", "/ok"))])
        elif p == "/moderate":
            try:
                doc = json.loads(body or b"{}")
                text = (doc.get("data") or doc).get("body", "")  # a webhook's payload, or {"body": ...}
            except ValueError:
                self.reply(400, "bad json")
                return
            if "spam" in text:
                answer = {"action": "reject", "reason": "the service says spam"}
            elif "shout" in text:
                answer = {"action": "rewrite", "body": text.upper()}
            else:
                answer = {"action": "allow"}
            delay = int(q.get("ms", "0"))
            if delay:
                time.sleep(delay / 1000.0)
            self.reply(200, json.dumps(answer), content_type="application/json")
        elif p == "/flaky" or p == "/hook":
            if p == "/hook" and q.get("ms"):
                time.sleep(int(q["ms"]) / 1000.0)
            key = q.get("key") or (self.headers.get("X-Hubu-Delivery") if p == "/hook" else None) or p
            n = count(key)
            if n <= int(q.get("fail", "0")):
                self.reply(503, "try again")
            else:
                self.reply(200, "ok")
        elif p == "/headers":
            self.reply(200, "h", [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("X-Test", "yes")])
        elif p == "/_log":
            with LOCK:
                data = json.dumps(RECORDS)
            self.reply(200, data, content_type="application/json")
        else:
            self.reply(404, "no such path")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = handle_any


def main():
    global LOG_FILE
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--lifetime", type=float, default=300)
    ap.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    a = ap.parse_args()
    LOG_FILE = a.log
    ThreadingHTTPServer.request_queue_size = 128  # the listen backlog: the client opens many connections at once
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    if a.tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.tls[0], a.tls[1])
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    tmp = a.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % srv.server_address[1])
    os.rename(tmp, a.port_file)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=srv.shutdown, daemon=True).start())
    threading.Timer(a.lifetime, srv.shutdown).start()
    try:
        srv.serve_forever(poll_interval=0.1)
    finally:
        srv.server_close()
    os._exit(0)  # the lifetime timer thread may still wait


if __name__ == "__main__":
    sys.exit(main())
