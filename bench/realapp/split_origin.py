#!/usr/bin/env python3
"""A minimal HTTP/1.1 origin for the HEAD investigation (bench/realapp.sh, docs/recipes.md):
answers every request with a cacheable 200 and controls how the response reaches the socket.

  split_origin.py PORT one      header and body in one send() (what lacquer's tests do)
  split_origin.py PORT split    header, then the body in a second send() (what gunicorn does)
  split_origin.py PORT split:5  the same with 5 ms between the two
  add ",close" (e.g. split,close) to answer with Connection: close and close, like gunicorn's
  sync worker; otherwise the connection is kept alive.
Logs one line per request (method and path) to stdout."""
import socket
import sys
import threading
import time

PORT = int(sys.argv[1])
MODE = sys.argv[2] if len(sys.argv) > 2 else "one"
CLOSE = MODE.endswith(",close")
MODE = MODE.split(",")[0]
DELAY = float(MODE.split(":")[1]) / 1000 if ":" in MODE else 0.0
BODY = b"<!doctype html><title>split origin</title>" + b"x" * 6000 + b"\n"


def serve(conn):
    buf = b""
    with conn:
        while True:
            while b"\r\n\r\n" not in buf:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
            head, buf = buf.split(b"\r\n\r\n", 1)
            method, path = head.split(b"\r\n")[0].split(b" ")[:2]
            print(method.decode(), path.decode(), flush=True)
            header = (
                b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                b"Cache-Control: max-age=300\r\n"
                + (b"Connection: close\r\n" if CLOSE else b"")
                + b"Content-Length: %d\r\n\r\n" % len(BODY)
            )
            body = b"" if method == b"HEAD" else BODY
            if MODE == "one":
                conn.sendall(header + body)
            else:
                conn.sendall(header)
                if DELAY:
                    time.sleep(DELAY)
                if body:
                    conn.sendall(body)
            if CLOSE:
                return


s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", PORT))
s.listen(64)
while True:
    c, _ = s.accept()
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    threading.Thread(target=serve, args=(c,), daemon=True).start()
