#!/usr/bin/env python3
"""Mixed soak: flat memory after warm-up, and metrics that add up.

Starts an origin written here (asyncio, its own process) and lacquer on free loopback ports,
with a small cache (`cache.max_size`, default 64MiB) that a scan of cold URLs overflows, and
runs a mixed workload for --seconds (default 600) from --workers keep-alive connections
(default 32), each choosing at random:

  hot     70 %  GET /hot/<0..999>        1 KiB, max-age=300: hits once warm
  scan    12 %  GET /scan/<unique>       --scan-size bytes (32 KiB), max-age=300: misses that
                                         fill the cache and force eviction
  tagged  10 %  GET /tagged/<0..499>     1 KiB, max-age=300, Surrogate-Key: group-<n % 10>
  fail     5 %  GET /fail/<0..99>        even n: the origin answers 502; odd n: it resets the
                                         connection (lacquer retries, then answers 502 itself)
  slow     3 %  GET /slow/<0..49>        the origin takes 500 ms, max-age=5: expiry, coalescing

and, from a purger task: every second `PURGE /hot/<n>` on the proxy listener, every 10 s
`PURGE /` with `xkey-purge: group-<k>`, and every 5 s `POST /purge` on the admin listener naming
one tag and one URL. lacquer's RSS (/proc/PID/status VmRSS) and cache gauges are sampled
every 5 s.

Checks, each printed with its numbers; the script exits 1 if one fails:
  memory   RSS at the end of warm-up (the first --warmup percent of the run, default 20)
           against the largest sample after it: growth at most --max-growth percent (15);
           and no sample above cache.max_size + --allowance-mib (96)
  cache    lacquer_cache_bytes never above lacquer_cache_capacity_bytes, and the scan really
           overflowed the budget (lacquer_cache_evictions_total{cause="size"} grew)
  requests the requests this script sent to the proxy listener = the increase of
           lacquer_requests_total (summed over labels); and per cache_status label, the count
           this script read from each response's Cache-Status header (PURGE: `purge`;
           lacquer's own error responses, `detail=upstream-error` and the like, or no
           Cache-Status at all: `error`) = the increase of that label
  purges   lacquer_purges_total{kind, result="ok"} grew by the URLs and tags this script
           purged, and nothing was denied, invalid or rate limited
  upstream the requests the origin received = the increase of lacquer_upstream_requests_total
           (all labels) within --upstream-tolerance percent (0.5); likewise the origin's 502s
           against status_class="5xx" and its resets against status_class="error"
  answers  hot, scan, tagged and slow requests all got a 200, purges a 200 or 404, failing
           requests a 502; no request failed at the connection level

Loopback only; the run, each request (10 s) and the shutdown are bounded in time. Needs the
release binary (bench/load.sh builds it): cargo build --release --locked --bin lacquer
Usage:
  python3 bench/soak.py [--seconds 600] [--workers 32] [--max-size 64MiB] [--threads 2]
"""
import argparse
import asyncio
import json
import os
import random
import resource
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

from loadlib import HOST, LACQUER, free_port, conclude, lacquer_version, read_response, start_lacquer, stop, wait_port

SITE = "soak.test"  # the Host header of every proxied request
IO_TIMEOUT = 10.0
SAMPLE_EVERY = 5.0
MIX = [("hot", 70), ("scan", 12), ("tagged", 10), ("fail", 5), ("slow", 3)]
IO_ERRORS = (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
             ValueError, IndexError)


# ================================================================ the origin (its own process)


def origin_response(status, body, extra=""):
    reason = {200: "OK", 404: "Not Found", 502: "Bad Gateway"}[status]
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Length: {len(body)}\r\nContent-Type: text/plain\r\n"
            f"{extra}\r\n").encode() + body


def serve_origin(port, scan_size, lifetime):
    """The soak origin. Counts every request it reads (by path prefix; resets and 502s too);
    `GET /_stats` answers the counts as JSON and is not counted."""
    counts = {"total": 0, "reset": 0, "502": 0}
    small = bytes(b"abcdefghijklmnopqrstuvwxyz"[i % 26] for i in range(1024))
    big = bytes(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"[i % 26] for i in range(scan_size))
    cached = "Cache-Control: public, max-age=300\r\n"

    open_writers = set()

    async def handle(reader, writer):
        open_writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                target = head.split(b"\r\n", 1)[0].split(b" ")[1].decode("latin-1")
                path = target.split("?", 1)[0]
                if path == "/_stats":
                    writer.write(origin_response(200, json.dumps(counts).encode(), "Cache-Control: no-store\r\n"))
                    await writer.drain()
                    continue
                kind = path.split("/")[1] if path.count("/") >= 2 else "other"
                counts["total"] += 1
                counts[kind] = counts.get(kind, 0) + 1
                n = path.rsplit("/", 1)[1]
                if kind == "hot":
                    resp = origin_response(200, small, cached)
                elif kind == "scan":
                    resp = origin_response(200, big, cached)
                elif kind == "tagged":
                    num = int(n) if n.isdigit() else 0
                    resp = origin_response(200, small, cached + f"Surrogate-Key: group-{num % 10} item-{num}\r\n")
                elif kind == "slow":
                    await asyncio.sleep(0.5)
                    resp = origin_response(200, small, "Cache-Control: public, max-age=5\r\n")
                elif kind == "fail":
                    if n.isdigit() and int(n) % 2 == 1:
                        counts["reset"] += 1
                        sock = writer.get_extra_info("socket")
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        writer.transport.abort()  # linger 0: the peer gets a RST
                        return
                    counts["502"] += 1
                    resp = origin_response(502, b"bad gateway\n")
                else:
                    resp = origin_response(404, b"not found\n")
                writer.write(resp)
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, IndexError, OSError):
            pass
        finally:
            open_writers.discard(writer)
            writer.close()

    async def main():
        server = await asyncio.start_server(handle, HOST, port, backlog=1024)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await asyncio.wait_for(stop.wait(), lifetime)  # never outlives the soak by much
        except asyncio.TimeoutError:
            pass
        server.close()
        for w in list(open_writers):  # let the handlers end on EOF rather than be cancelled
            w.transport.abort()
        await asyncio.sleep(0.2)

    asyncio.run(main())


# ================================================================ processes and /proc


def rss(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def parse_size(text):
    units = {"kib": 2**10, "mib": 2**20, "gib": 2**30, "kb": 10**3, "mb": 10**6, "gb": 10**9, "b": 1, "": 1}
    t = text.strip().lower()
    num = t.rstrip("abcdefghijklmnopqrstuvwxyz")
    return int(float(num) * units[t[len(num):].strip()])


# ================================================================ HTTP/1.1 client


async def one_shot(port, method, path, body=b"", headers=""):
    """One request on a fresh connection that is closed afterwards: (status, body)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), IO_TIMEOUT)
    try:
        writer.write(f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n"
                     f"Content-Length: {len(body)}\r\n{headers}\r\n".encode() + body)
        status, _, data = await asyncio.wait_for(read_response(reader, method), IO_TIMEOUT)
        return status, data
    finally:
        writer.close()


# the Cache-Status details of lacquer's own error responses (502/504/400/500 when the request
# failed before a response began; src/upstream.rs failure_status), counted as cache_status="error"
ERROR_DETAILS = {"connect-timeout", "response-timeout", "connect-refused", "upstream-error", "bad-request",
                 "internal-error", "error"}


def cache_status_label(method, headers):
    """The lacquer_requests_total cache_status a response's Cache-Status header stands for."""
    if method == "PURGE":
        return "purge"
    v = headers.get("cache-status")
    if v is None:  # lacquer's error responses before they had a Cache-Status
        return "error"
    parts = [p.strip() for p in v.split(";")]
    if any(p.startswith("detail=") and p[len("detail="):] in ERROR_DETAILS for p in parts):
        return "error"
    if "detail=stale-while-revalidate" in parts:
        return "stale"
    if "detail=stale-if-error" in parts:
        return "stale_if_error"
    if "detail=hit-for-miss" in parts:
        return "hit_for_miss"
    if "hit" in parts:
        return "hit"
    if "fwd=miss" in parts:
        return "miss"
    if "fwd=stale" in parts:
        return "revalidated" if "fwd-status=304" in parts else "expired"
    if "fwd=bypass" in parts or "fwd=method" in parts:
        return "bypass"
    return "unknown:" + v


class Stats:
    def __init__(self):
        self.sent = 0  # requests written to the proxy listener
        self.answered = 0  # of which a whole response was read
        self.unanswered_reused = 0  # failed on a reused connection before any byte came back
        self.labels = {}  # cache_status read from the responses
        self.by_kind = {}  # kind -> {"n", "status": {code: n}, "errors": n, "lat": [...]}
        self.errors = {}  # exception type -> n
        self.unexpected_close = 0  # lacquer closed a keep-alive connection without saying so
        self.purged_urls = 0  # URLs named in purges (proxy and admin)
        self.purged_tags = 0  # tags named in purges (proxy and admin)
        self.admin_purges = 0
        self.admin_purge_failures = 0

    def kind(self, name):
        return self.by_kind.setdefault(name, {"n": 0, "status": {}, "errors": 0, "lat": []})


class Client:
    """One keep-alive connection to the proxy listener, reopened when it closes."""

    def __init__(self, port, stats):
        self.port, self.stats = port, stats
        self.reader = self.writer = None
        self.reused = False

    def close(self):
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, kind, method, path, extra=""):
        st, k = self.stats, self.stats.kind(kind)
        t0 = time.perf_counter()
        if self.writer is not None and self.reader.at_eof():
            st.unexpected_close += 1
            self.close()
        try:
            if self.writer is None:
                self.reader, self.writer = await asyncio.wait_for(asyncio.open_connection(HOST, self.port), IO_TIMEOUT)
                self.reused = False
            self.writer.write(f"{method} {path} HTTP/1.1\r\nHost: {SITE}\r\nUser-Agent: lacquer-soak\r\n{extra}\r\n".encode())
            st.sent += 1
            k["n"] += 1
            status, headers, _ = await asyncio.wait_for(read_response(self.reader, method), IO_TIMEOUT)
        except IO_ERRORS as e:
            name = type(e).__name__
            if self.reused and isinstance(e, asyncio.IncompleteReadError) and not e.partial:
                st.unanswered_reused += 1
                name += " (reused connection, nothing read)"
            st.errors[name] = st.errors.get(name, 0) + 1
            k["errors"] += 1
            self.close()
            return None
        st.answered += 1
        k["lat"].append(time.perf_counter() - t0)
        k["status"][status] = k["status"].get(status, 0) + 1
        label = cache_status_label(method, headers)
        st.labels[label] = st.labels.get(label, 0) + 1
        self.reused = True
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status


# ================================================================ metrics


def parse_metrics(text):
    """{(name, ((label, value), ...)): value} from the Prometheus text format."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, value = line.rsplit(" ", 1)
        if "{" in series:
            name, rest = series.split("{", 1)
            labels = []
            for part in rest.rstrip("}").split('",'):
                if "=" in part:
                    k, v = part.split("=", 1)
                    labels.append((k.strip(), v.strip().strip('"')))
            key = (name, tuple(sorted(labels)))
        else:
            key = (series, ())
        try:
            out[key] = float(value)
        except ValueError:
            pass
    return out


def msum(m, name, **labels):
    return sum(v for (n, ls), v in m.items() if n == name and all(dict(ls).get(k) == val for k, val in labels.items()))


def mdelta(before, after, name, **labels):
    return msum(after, name, **labels) - msum(before, name, **labels)


def label_values(m, name, label):
    return sorted({dict(ls).get(label, "") for (n, ls) in m if n == name})


async def scrape(admin_port):
    status, body = await one_shot(admin_port, "GET", "/metrics")
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}")
    return parse_metrics(body.decode())


async def origin_stats(origin_port):
    _, body = await one_shot(origin_port, "GET", "/_stats")
    return json.loads(body)


# ================================================================ the workload


async def worker(i, port, stats, end, seed, scan_counter):
    rng = random.Random(seed * 1000 + i)
    kinds = [k for k, w in MIX for _ in range(w)]
    client = Client(port, stats)
    try:
        while time.monotonic() < end:
            kind = rng.choice(kinds)
            if kind == "hot":
                path = f"/hot/{rng.randrange(1000)}"
            elif kind == "scan":
                scan_counter[0] += 1
                path = f"/scan/{seed}-{scan_counter[0]}-{rng.randrange(1 << 30):x}"
            elif kind == "tagged":
                path = f"/tagged/{rng.randrange(500)}"
            elif kind == "fail":
                path = f"/fail/{rng.randrange(100)}"
            else:
                path = f"/slow/{rng.randrange(50)}"
            await client.request(kind, "GET", path)
    finally:
        client.close()


async def purger(port, admin_port, stats, end, seed):
    rng = random.Random(seed)
    client = Client(port, stats)
    tick = 0
    try:
        while time.monotonic() < end:
            await asyncio.sleep(1.0)
            if time.monotonic() >= end:
                break
            tick += 1
            if await client.request("purge", "PURGE", f"/hot/{rng.randrange(1000)}") is not None:
                stats.purged_urls += 1
            if tick % 10 == 0:
                if await client.request("purge", "PURGE", "/", f"xkey-purge: group-{rng.randrange(10)}\r\n") is not None:
                    stats.purged_tags += 1
            if tick % 5 == 0:
                body = json.dumps({"tags": [f"group-{rng.randrange(10)}"],
                                   "urls": [f"http://{SITE}/tagged/{rng.randrange(500)}"]}).encode()
                stats.admin_purges += 1
                try:
                    status, _ = await one_shot(admin_port, "POST", "/purge", body, "Content-Type: application/json\r\n")
                except IO_ERRORS:
                    status = None
                if status == 200:
                    stats.purged_tags += 1
                    stats.purged_urls += 1
                else:
                    stats.admin_purge_failures += 1
    finally:
        client.close()


async def sampler(pid, admin_port, samples, start, end):
    while True:
        now = time.monotonic()
        try:
            m = await scrape(admin_port)
        except IO_ERRORS + (RuntimeError,):
            m = {}
        samples.append({"t": now - start, "rss": rss(pid), "cache_bytes": msum(m, "lacquer_cache_bytes"),
                        "objects": msum(m, "lacquer_cache_objects"), "capacity": msum(m, "lacquer_cache_capacity_bytes"),
                        "requests": msum(m, "lacquer_requests_total")})
        if now >= end:
            return
        await asyncio.sleep(min(SAMPLE_EVERY, max(0.0, end - time.monotonic())))


async def soak(args, port, admin_port, origin_port, pid):
    stats = Stats()
    # lacquer answers, and the counters start from a known point
    m0 = await scrape(admin_port)
    o0 = await origin_stats(origin_port)
    start = time.monotonic()
    end = start + args.seconds
    samples = []
    scan_counter = [0]
    tasks = [asyncio.create_task(worker(i, port, stats, end, args.seed, scan_counter)) for i in range(args.workers)]
    tasks.append(asyncio.create_task(purger(port, admin_port, stats, end, args.seed)))
    tasks.append(asyncio.create_task(sampler(pid, admin_port, samples, start, end)))
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - start
    await asyncio.sleep(1.0)  # requests are counted when their logging phase ends
    m1 = await scrape(admin_port)
    o1 = await origin_stats(origin_port)
    samples.append({"t": time.monotonic() - start, "rss": rss(pid), "cache_bytes": msum(m1, "lacquer_cache_bytes"),
                    "objects": msum(m1, "lacquer_cache_objects"), "capacity": msum(m1, "lacquer_cache_capacity_bytes"),
                    "requests": msum(m1, "lacquer_requests_total")})
    return stats, samples, m0, m1, o0, o1, elapsed


# ================================================================ checks and report


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(q * len(xs))) - 1))] if xs else None


def fmt_ms(s):
    return "-" if s is None else f"{s * 1e3:.1f} ms"


def mib(b):
    return f"{b / 2**20:.1f} MiB"


def evaluate(args, budget, stats, samples, m0, m1, o0, o1, elapsed):
    checks = []  # (name, ok, detail)

    def check(name, ok, detail):
        checks.append((name, bool(ok), detail))

    # ---- memory
    warm_t = args.seconds * args.warmup / 100
    warm = next((s for s in samples if s["t"] >= warm_t), samples[-1])
    after = [s for s in samples if s["t"] > warm["t"]]
    peak_after = max((s["rss"] for s in after), default=warm["rss"])
    growth = (peak_after - warm["rss"]) / warm["rss"] * 100 if warm["rss"] else 0.0
    check("memory: growth after warm-up", growth <= args.max_growth,
          f"RSS {mib(warm['rss'])} at {warm['t']:.0f} s (end of warm-up), peak after {mib(peak_after)}: "
          f"{growth:+.1f} % (limit {args.max_growth:g} %)")
    peak = max(s["rss"] for s in samples)
    bound = budget + args.allowance_mib * 2**20
    check("memory: within budget + allowance", peak <= bound,
          f"peak RSS {mib(peak)}, bound {mib(bound)} (cache.max_size {mib(budget)} + {args.allowance_mib} MiB)")

    # ---- cache
    over = [s for s in samples if s["capacity"] and s["cache_bytes"] > s["capacity"]]
    check("cache: bytes within capacity", not over,
          f"max lacquer_cache_bytes {mib(max(s['cache_bytes'] for s in samples))} of "
          f"{mib(samples[-1]['capacity'])}" + (f"; over it in {len(over)} samples" if over else ""))
    evicted = mdelta(m0, m1, "lacquer_cache_evictions_total", cause="size")
    check("cache: the scan overflowed the budget", evicted > 0,
          f"evictions: size +{evicted:,.0f}, expired +{mdelta(m0, m1, 'lacquer_cache_evictions_total', cause='expired'):,.0f}, "
          f"purged +{mdelta(m0, m1, 'lacquer_cache_evictions_total', cause='purged'):,.0f}; "
          f"inserts +{mdelta(m0, m1, 'lacquer_cache_inserts_total'):,.0f}; "
          f"cache at warm-up end {mib(warm['cache_bytes'])}")

    # ---- requests
    total = mdelta(m0, m1, "lacquer_requests_total")
    exact = total == stats.sent
    within = stats.sent - stats.unanswered_reused <= total <= stats.sent
    check("requests: sent = lacquer_requests_total", exact or (within and stats.unanswered_reused),
          f"sent {stats.sent:,} (answered {stats.answered:,}, {stats.unanswered_reused} unanswered on a reused "
          f"connection), lacquer_requests_total +{total:,.0f}")
    labels = sorted(set(stats.labels) | set(label_values(m1, "lacquer_requests_total", "cache_status")))
    per_label = []
    mismatched = []
    for lab in labels:
        seen = stats.labels.get(lab, 0)
        counted = mdelta(m0, m1, "lacquer_requests_total", cache_status=lab)
        per_label.append((lab, seen, counted))
        if seen != counted:
            mismatched.append(f"{lab}: responses {seen:,} vs metric +{counted:,.0f}")
    unanswered = stats.sent - stats.answered
    check("requests: each cache_status = the responses' Cache-Status",
          not mismatched or (sum(abs(s - c) for _, s, c in per_label) <= unanswered and unanswered),
          "all labels equal" if not mismatched else "; ".join(mismatched))

    # ---- purges
    url_ok = mdelta(m0, m1, "lacquer_purges_total", kind="url", result="ok")
    tag_ok = mdelta(m0, m1, "lacquer_purges_total", kind="tag", result="ok")
    refused = sum(mdelta(m0, m1, "lacquer_purges_total", result=r)
                  for r in label_values(m1, "lacquer_purges_total", "result") if r != "ok")
    check("purges: counted as sent", url_ok == stats.purged_urls and tag_ok == stats.purged_tags and refused == 0
          and stats.admin_purge_failures == 0,
          f"URLs purged {stats.purged_urls:,} vs kind=url +{url_ok:,.0f}; tags purged {stats.purged_tags:,} vs "
          f"kind=tag +{tag_ok:,.0f}; refused +{refused:,.0f}; admin API failures {stats.admin_purge_failures}")

    # ---- upstream
    def close(a, b):
        return abs(a - b) <= max(2.0, args.upstream_tolerance / 100 * max(a, b))

    origin_total = o1["total"] - o0["total"]
    lacquer_up = mdelta(m0, m1, "lacquer_upstream_requests_total")
    up_5xx = mdelta(m0, m1, "lacquer_upstream_requests_total", status_class="5xx")
    up_err = mdelta(m0, m1, "lacquer_upstream_requests_total", status_class="error")
    o_502, o_reset = o1["502"] - o0["502"], o1["reset"] - o0["reset"]
    check("upstream: origin count = lacquer_upstream_requests_total",
          close(origin_total, lacquer_up) and close(o_502, up_5xx) and close(o_reset, up_err),
          f"origin received {origin_total:,} vs +{lacquer_up:,.0f}; origin 502s {o_502:,} vs 5xx +{up_5xx:,.0f}; "
          f"origin resets {o_reset:,} vs error +{up_err:,.0f} "
          f"(retries +{mdelta(m0, m1, 'lacquer_upstream_retries_total'):,.0f}, "
          f"background revalidations +{mdelta(m0, m1, 'lacquer_background_revalidations_total'):,.0f})")

    # ---- answers
    wrong = []
    for kind, k in sorted(stats.by_kind.items()):
        good = {"purge": {200, 404}, "fail": {502}}.get(kind, {200})
        bad = sum(n for code, n in k["status"].items() if code not in good)
        if bad or k["errors"]:
            wrong.append(f"{kind}: {bad} unexpected statuses {dict(sorted(k['status'].items()))}, {k['errors']} failed")
    check("answers: expected statuses, no connection errors", not wrong,
          "; ".join(wrong) if wrong else f"{stats.answered:,} answers as expected"
          + (f"; keep-alive connections closed by lacquer without `Connection: close`: {stats.unexpected_close}"
             if stats.unexpected_close else ""))
    return checks, per_label, warm


def report(args, budget, version, stats, samples, checks, per_label, warm, m0, m1, elapsed, origin_total):
    lines = [f"## Soak ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
             f"{version}; {args.seconds:g} s asked, {elapsed:.0f} s run; {args.workers} workers + 1 purger; "
             f"{args.threads} lacquer threads; cache.max_size {mib(budget)}; scan objects {args.scan_size:,} bytes; "
             f"{os.cpu_count()} CPUs, load average at the start {args.load[0]:.2f} / {args.load[1]:.2f} / {args.load[2]:.2f}.", "",
             f"{stats.sent:,} requests to the proxy listener ({stats.sent / elapsed:,.0f}/s), "
             f"{stats.admin_purges} admin purges, {origin_total:,} requests reached the origin.", "",
             "| kind | requests | statuses | connection errors | p50 | p99 | max |", "|---|---|---|---|---|---|---|"]
    for kind, k in sorted(stats.by_kind.items(), key=lambda kv: -kv[1]["n"]):
        statuses = ", ".join(f"{c}: {n:,}" for c, n in sorted(k["status"].items()))
        lines.append(f"| {kind} | {k['n']:,} | {statuses} | {k['errors']} | {fmt_ms(pct(k['lat'], 0.5))} | "
                     f"{fmt_ms(pct(k['lat'], 0.99))} | {fmt_ms(max(k['lat'], default=None))} |")
    lines += ["", "| cache_status | from Cache-Status headers | lacquer_requests_total increase |", "|---|---|---|"]
    for lab, seen, counted in per_label:
        lines.append(f"| {lab} | {seen:,} | {counted:,.0f} |")
    lines.append(f"| **total** | {stats.answered:,} answered of {stats.sent:,} sent | "
                 f"{mdelta(m0, m1, 'lacquer_requests_total'):,.0f} |")
    lines += ["", f"Memory (RSS every {SAMPLE_EVERY:g} s; warm-up ends at sample t={warm['t']:.0f} s):", "",
              "| t | RSS | cache bytes | objects | requests so far |", "|---|---|---|---|---|"]
    step = max(1, len(samples) // 24)
    shown = samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else [])
    for s in shown:
        lines.append(f"| {s['t']:.0f} s | {mib(s['rss'])} | {mib(s['cache_bytes'])} | {s['objects']:,.0f} | "
                     f"{s['requests'] - samples[0]['requests']:,.0f} |")
    lines += ["", "| check | result | numbers |", "|---|---|---|"]
    for name, ok, detail in checks:
        lines.append(f"| {name} | {'ok' if ok else '**FAILED**'} | {detail} |")
    if stats.errors:
        lines += ["", "Connection-level errors: " + ", ".join(f"{k}: {v}" for k, v in sorted(stats.errors.items()))]
    return "\n".join(lines) + "\n"


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-origin":
        return serve_origin(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=600.0, help="length of the mixed workload")
    ap.add_argument("--workers", type=int, default=32, help="concurrent keep-alive clients")
    ap.add_argument("--max-size", default="64MiB", help="lacquer's cache.max_size")
    ap.add_argument("--scan-size", type=int, default=32 * 1024, help="body bytes of each /scan/ object")
    ap.add_argument("--threads", type=int, default=2, help="lacquer worker threads")
    ap.add_argument("--warmup", type=float, default=20.0, help="percent of the run counted as warm-up")
    ap.add_argument("--max-growth", type=float, default=15.0, help="percent of RSS growth allowed after warm-up")
    ap.add_argument("--allowance-mib", type=int, default=96, help="RSS allowed above cache.max_size, MiB")
    ap.add_argument("--upstream-tolerance", type=float, default=0.5, help="percent")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if not os.access(LACQUER, os.X_OK):
        sys.exit(f"{LACQUER} missing: cargo build --release --locked --bin lacquer")
    budget = parse_size(args.max_size)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by lacquer and the origin

    workdir = tempfile.mkdtemp(prefix="lacquer-soak-")
    origin_port, port, admin_port = free_port(), free_port(), free_port()
    lifetime = args.seconds + 300
    origin = lacquer = None
    try:
        origin = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve-origin", str(origin_port),
                                   str(args.scan_size), str(lifetime)], stdout=subprocess.DEVNULL,
                                  stderr=open(f"{workdir}/origin.log", "w"))
        wait_port(origin_port)
        lacquer = start_lacquer(workdir, port, admin_port, origin_port, args.threads, args.max_size,
                                'purge:\n  allow: ["127.0.0.1/32"]\n')
        version = lacquer_version()
        args.load = os.getloadavg()
        result = asyncio.run(asyncio.wait_for(soak(args, port, admin_port, origin_port, lacquer.pid), args.seconds + 120))
        alive = lacquer.poll() is None
    finally:
        if lacquer is not None:
            stop(lacquer)
        if origin is not None:
            stop(origin, signal.SIGTERM)
    stats, samples, m0, m1, o0, o1, elapsed = result
    checks, per_label, warm = evaluate(args, budget, stats, samples, m0, m1, o0, o1, elapsed)
    checks.append(("lacquer still running at the end", alive, "yes" if alive else "it exited; see its log"))
    print(report(args, budget, version, stats, samples, checks, per_label, warm, m0, m1, elapsed, o1["total"] - o0["total"]))
    failed = [name for name, ok, _ in checks if not ok]
    conclude(failed, f"{workdir}/lacquer.log, {workdir}/origin.log", workdir)


if __name__ == "__main__":
    main()
