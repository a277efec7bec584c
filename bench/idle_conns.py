#!/usr/bin/env python3
"""Idle keep-alive connections: lacquer holds N of them and still answers new requests promptly.

Starts the bench origin (examples/bench_origin.rs) and lacquer on free loopback ports, warms
one cached 1 KiB URL, then opens N keep-alive connections to lacquer (default 10,000, in
batches of 250 so the listen backlog is not overrun). Each sends one request and reads the
whole response, so every connection is a real keep-alive connection waiting for its next
request. This is done --cycles times (default 3): the connections of the earlier cycles are
closed again at once, to see the memory that lacquer keeps once its allocator has recycled
connection buffers; those of the last cycle are held (default 20 s, below lacquer's 60 s
`limits.idle_timeout`) and measured.

While they are held it times new requests on fresh connections from a separate client
process: 200 one after the other, then 1,000 with 50 in flight (connect to last byte), next to
lacquer's own view of the same requests (its `lacquer_request_duration_seconds` histogram).
The same measurement is taken before any idle connection is opened, as a baseline. It records
lacquer's RSS (/proc/PID/status VmRSS), VmData and open file descriptors before and with the
connections, and after closing them; at the end it counts the held connections that lacquer
closed and sends one more request on each of them (or on a sample, --verify).

Prints a Markdown summary. Exits 1 if a new request failed, if the p99 of new requests while
the connections are held exceeds --p99-ms (default 100 ms), if fewer than N connections could
be opened, if a held connection was dropped or failed its last request, or if lacquer kept the
sockets of closed connections open; the numbers are printed either way. Loopback only; every
phase is bounded in time.

Needs the release binaries (bench/load.sh builds them):
  cargo build --release --locked --bin lacquer --example bench_origin
Usage:
  python3 bench/idle_conns.py [--conns 10000] [--hold 20] [--cycles 3] [--threads 2] [--p99-ms 100]
"""
import argparse
import asyncio
import gc
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from loadlib import HOST, LACQUER, TARGET, free_port, conclude, lacquer_version, read_response, start_lacquer, stop, wait_port

ORIGIN = f"{TARGET}/release/examples/bench_origin"
URL_PATH = "/1k/idle-conns"
IO_TIMEOUT = 10.0  # seconds, any single connect or request


# ---------------------------------------------------------------- processes


def raise_nofile(wanted):
    """Raise the soft fd limit up to the hard limit (children inherit it); returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(wanted, soft)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def proc_status(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def rss(pid):
    return proc_status(pid, "VmRSS")


def open_fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def nofile_limit_of(pid):
    try:
        with open(f"/proc/{pid}/limits") as f:
            for line in f:
                if line.startswith("Max open files"):
                    return int(line.split()[3])
    except (OSError, ValueError, IndexError):
        pass
    return -1


def cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


# ---------------------------------------------------------------- HTTP/1.1 client


def request_bytes(port, path=URL_PATH):
    return f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUser-Agent: lacquer-idle-conns\r\n\r\n".encode()


async def fresh_request(port):
    """Latency in seconds of one request on a new connection, or None on failure."""
    t0 = time.perf_counter()
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), IO_TIMEOUT)
        writer.write(request_bytes(port))
        status, _, body = await asyncio.wait_for(read_response(reader), IO_TIMEOUT)
        ok = status == 200 and len(body) == 1024
        return time.perf_counter() - t0 if ok else None
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError):
        return None
    finally:
        if writer is not None:
            writer.close()


async def measure_local(port, sequential, total, concurrency):
    """In the measuring child: `sequential` requests one after the other, or `total` with
    `concurrency` in flight, each on a fresh connection."""
    if sequential:
        return summarize([await fresh_request(port) for _ in range(sequential)])
    queue = list(range(total))
    results = []

    async def worker():
        while queue:
            queue.pop()
            results.append(await fresh_request(port))

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return summarize(results, time.perf_counter() - t0)


async def http_get(port, path):
    """(status, body) of one GET on a fresh connection."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), IO_TIMEOUT)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
        status, _, body = await asyncio.wait_for(read_response(reader), IO_TIMEOUT)
        return status, body
    finally:
        writer.close()


async def metric_value(admin_port, name):
    """One unlabelled counter or gauge from lacquer's /metrics, or None when it is not there."""
    _, body = await http_get(admin_port, "/metrics")
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


async def hit_histogram(admin_port):
    """lacquer's cumulative `lacquer_request_duration_seconds_bucket{cache_status="hit"}`: {le: count}."""
    _, body = await http_get(admin_port, "/metrics")
    out = {}
    for line in body.decode().splitlines():
        if line.startswith("lacquer_request_duration_seconds_bucket{") and 'cache_status="hit"' in line:
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out[float("inf") if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
    return out


def server_quantiles(before, after):
    """Upper bucket bounds of p50/p99 of the hits lacquer timed between two scrapes."""
    delta = sorted((le, after.get(le, 0) - before.get(le, 0)) for le in after)
    total = delta[-1][1] if delta else 0
    out = {"n": int(total)}
    for name, q in (("p50", 0.5), ("p99", 0.99)):
        out[name] = next((le for le, c in delta if total and c >= q * total), None)
    return out


async def measure(port, admin_port, sequential, total, concurrency):
    """Both measurements, each in a child process (so the thousands of sockets this process
    holds, and its garbage collector, stay out of the timings), with lacquer's own view of
    the same requests from its request-duration histogram."""
    out = {}
    for kind, argv in (("sequential", [str(sequential), "0", "1"]), ("concurrent", ["0", str(total), str(concurrency)])):
        h0 = await hit_histogram(admin_port)
        child = await asyncio.create_subprocess_exec(sys.executable, os.path.abspath(__file__), "--measure", str(port),
                                                     *argv, stdout=asyncio.subprocess.PIPE)
        try:
            stdout, _ = await asyncio.wait_for(child.communicate(), 120)
            res = json.loads(stdout.decode().strip().splitlines()[-1])
        except (asyncio.TimeoutError, ValueError, IndexError):
            if child.returncode is None:
                child.kill()
                await child.wait()
            n = sequential or total
            res = {"n": n, "errors": n}
        await asyncio.sleep(0.2)  # lacquer counts a request when its logging phase ends
        res["server"] = server_quantiles(h0, await hit_histogram(admin_port))
        out[kind] = res
    return out


def summarize(results, elapsed=None):
    ok = sorted(r for r in results if r is not None)
    out = {"n": len(results), "errors": len(results) - len(ok)}
    if ok:
        out["p50"] = statistics.median(ok)
        out["p99"] = ok[min(len(ok) - 1, int(round(0.99 * len(ok))) - 1)]
        out["max"] = ok[-1]
    if elapsed:
        out["rps"] = len(results) / elapsed
    return out


class Held:
    """One idle keep-alive connection."""

    __slots__ = ("reader", "writer")

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    def closed(self):
        return self.reader.at_eof() or self.writer.is_closing()


async def open_held(port):
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), IO_TIMEOUT)
        writer.write(request_bytes(port))
        status, headers, _ = await asyncio.wait_for(read_response(reader), IO_TIMEOUT)
        if status != 200 or headers.get("connection", "").lower() == "close":
            writer.close()
            return None
        return Held(reader, writer)
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError):
        if writer is not None:
            writer.close()
        return None


async def reuse_held(conn, port):
    """Whether one more request on a held connection gets its full answer."""
    if conn.closed():
        return False
    try:
        conn.writer.write(request_bytes(port))
        status, _, body = await asyncio.wait_for(read_response(conn.reader), IO_TIMEOUT)
        return status == 200 and len(body) == 1024
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError):
        return False


async def in_batches(coros_factory, count, batch):
    out = []
    for start in range(0, count, batch):
        out += await asyncio.gather(*(coros_factory(i) for i in range(start, min(count, start + batch))))
    return out


# ---------------------------------------------------------------- the run


def fmt_ms(s):
    return "-" if s is None else f"{s * 1e3:.2f} ms"


def fmt_mib(b):
    return f"{b / 2**20:.1f} MiB"


async def run(args, port, admin_port, lacquer_pid):
    res = {}
    # warm: the URL is stored, then every request below is a hit
    for _ in range(2):
        if await fresh_request(port) is None:
            raise RuntimeError("warm-up request failed")
    res["baseline"] = await measure(port, admin_port, args.sequential, args.requests, args.concurrency)
    await asyncio.sleep(1)
    res["idle_closed_before"] = await metric_value(admin_port, "lacquer_client_idle_closed_total")
    res["rss_before"], res["fds_before"] = rss(lacquer_pid), open_fds(lacquer_pid)
    res["data_before"] = proc_status(lacquer_pid, "VmData")

    res["cycles"] = []
    for cycle in range(1, args.cycles + 1):
        t0 = time.monotonic()
        held = await open_many(args, port)
        res["open_seconds"] = time.monotonic() - t0
        res["opened"] = len(held)
        held_since = time.monotonic()
        gc.collect()
        gc.freeze()  # the held connections live to the end: keep them out of later collections
        await asyncio.sleep(1)
        c = {"cycle": cycle, "opened": len(held), "rss": rss(lacquer_pid), "data": proc_status(lacquer_pid, "VmData"),
             "fds": open_fds(lacquer_pid)}
        res["cycles"].append(c)
        if cycle == args.cycles:
            break
        # an earlier cycle: close them all, and see what lacquer gives back
        gc.unfreeze()
        for conn in held:
            conn.writer.close()
        del held
        gc.collect()
        await asyncio.sleep(2)
        c["rss_closed"], c["fds_closed"] = rss(lacquer_pid), open_fds(lacquer_pid)
    res["rss_after"], res["fds_after"], res["data_after"] = c["rss"], c["fds"], c["data"]

    res["held"] = await measure(port, admin_port, args.sequential, args.requests, args.concurrency)
    res["rss_loaded"] = rss(lacquer_pid)

    # hold the rest of the time without traffic: idle connections should cost no CPU
    remaining = args.hold - (time.monotonic() - held_since)
    c0 = cpu_seconds(lacquer_pid)
    w0 = time.monotonic()
    if remaining > 0:
        await asyncio.sleep(remaining)
    res["idle_wait"] = time.monotonic() - w0
    res["idle_cpu"] = cpu_seconds(lacquer_pid) - c0
    res["held_seconds"] = time.monotonic() - held_since
    res["fds_end"] = open_fds(lacquer_pid)
    res["dropped"] = sum(1 for c in held if c.closed())
    res["idle_closed_after"] = await metric_value(admin_port, "lacquer_client_idle_closed_total")

    verify = held if args.verify <= 0 or args.verify >= len(held) else held[:: max(1, len(held) // args.verify)][: args.verify]
    ok = await in_batches(lambda i: reuse_held(verify[i], port), len(verify), args.batch)
    res["verified"], res["verify_ok"] = len(verify), sum(ok)
    for conn in held:
        conn.writer.close()
    await asyncio.sleep(2)
    res["cycles"][-1]["rss_closed"], res["cycles"][-1]["fds_closed"] = rss(lacquer_pid), open_fds(lacquer_pid)
    return res


async def open_many(args, port):
    """N keep-alive connections, each with one request answered, opened in batches."""
    held = []
    deadline = time.monotonic() + args.open_timeout
    for start in range(0, args.conns, args.batch):
        if time.monotonic() > deadline:
            break
        n = min(args.batch, args.conns - start)
        batch = await asyncio.gather(*(open_held(port) for _ in range(n)))
        held += [c for c in batch if c is not None]
    return held


def report(args, res, nofile_self, nofile_lacquer, version, load):
    lines = [f"## Idle keep-alive connections ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
             f"{version}; {args.threads} worker thread(s); {os.cpu_count()} CPUs, load average at the start "
             f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}; fd limit {nofile_self} (script), {nofile_lacquer} (lacquer). "
             f"Every request is a hit on one cached 1 KiB URL.", ""]
    n = max(res["opened"], 1)
    first = res["cycles"][0]
    idle_closed = "not exported" if res["idle_closed_after"] is None else \
        f"+{res['idle_closed_after'] - (res['idle_closed_before'] or 0):,.0f}"
    lines += ["| idle connections | |", "|---|---|",
              f"| asked / opened | {args.conns:,} / {res['opened']:,} (in {res['open_seconds']:.1f} s, batches of {args.batch}) |",
              f"| held for | {res['held_seconds']:.1f} s (cycle {args.cycles} of {args.cycles}) |",
              f"| lacquer open fds before / with them / after closing them | {res['fds_before']:,} / {res['fds_after']:,} / "
              f"{res['cycles'][-1]['fds_closed']:,} |",
              f"| lacquer RSS before / with them | {fmt_mib(res['rss_before'])} / {fmt_mib(res['rss_after'])} |",
              f"| RSS per idle connection, first cycle (fresh process) | "
              f"{(first['rss'] - res['rss_before']) / max(first['opened'], 1):,.0f} bytes |",
              f"| RSS per idle connection, cycle {args.cycles} | {(res['rss_after'] - res['rss_before']) / n:,.0f} bytes |",
              f"| allocated address space (VmData) per idle connection, cycle {args.cycles} | "
              f"{(res['data_after'] - res['data_before']) / n:,.0f} bytes |",
              f"| lacquer RSS after the new requests | {fmt_mib(res['rss_loaded'])} |",
              f"| lacquer CPU while only holding them | {res['idle_cpu']:.2f} s in {res['idle_wait']:.1f} s |",
              f"| closed by lacquer before the end | {res['dropped']:,} (`lacquer_client_idle_closed_total` "
              f"{idle_closed}) |",
              f"| one more request on each of {res['verified']:,} held connections | {res['verify_ok']:,} ok, "
              f"{res['verified'] - res['verify_ok']:,} failed |", ""]
    lines += [f"Memory over {args.cycles} cycles of opening {args.conns:,} connections and closing them (the last "
              f"cycle is the one held and measured; RSS before the first: {fmt_mib(res['rss_before'])}):", "",
              "| cycle | opened | lacquer RSS with them | per connection (vs before) | VmData per connection | "
              "RSS 2 s after closing them | lacquer fds after closing |", "|---|---|---|---|---|---|---|"]
    for c in res["cycles"]:
        k = max(c["opened"], 1)
        lines.append(f"| {c['cycle']} | {c['opened']:,} | {fmt_mib(c['rss'])} | {(c['rss'] - res['rss_before']) / k:,.0f} B | "
                     f"{(c['data'] - res['data_before']) / k:,.0f} B | {fmt_mib(c['rss_closed'])} | {c['fds_closed']:,} |")
    lines.append("")
    lines += ["New requests, each on a fresh connection, timed by a separate client process from connect to "
              "last byte; \"lacquer p50/p99\" is lacquer's own view of the same requests (arrival to last byte, "
              "upper bound of the `lacquer_request_duration_seconds` bucket).", "",
              "| new requests | idle connections | requests | errors | p50 | p99 | max | req/s | lacquer p50 | lacquer p99 |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for phase, idle in (("baseline", 0), ("held", res["opened"])):
        for kind, label in (("sequential", "one at a time"), ("concurrent", f"{args.concurrency} in flight")):
            m = res[phase][kind]
            rps = f"{m['rps']:,.0f}" if "rps" in m else "-"
            srv = m["server"]
            lines.append(f"| {label} | {idle:,} | {m['n']:,} | {m['errors']} | {fmt_ms(m.get('p50'))} | "
                         f"{fmt_ms(m.get('p99'))} | {fmt_ms(m.get('max'))} | {rps} | "
                         f"≤ {fmt_ms(srv['p50'])} | ≤ {fmt_ms(srv['p99'])} |")
    return "\n".join(lines) + "\n"


def measure_child(argv):
    """`--measure PORT SEQUENTIAL TOTAL CONCURRENCY`: one measurement, printed as JSON."""
    port, sequential, total, concurrency = map(int, argv)
    print(json.dumps(asyncio.run(measure_local(port, sequential, total, concurrency))))


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--measure":
        return measure_child(sys.argv[2:6])
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--conns", type=int, default=10_000, help="idle keep-alive connections to hold")
    ap.add_argument("--hold", type=float, default=20.0, help="seconds to hold them (keep below limits.idle_timeout)")
    ap.add_argument("--idle-timeout", help="write limits.idle_timeout (e.g. 30s) into lacquer's config; "
                    "default: lacquer's own default (60 s)")
    ap.add_argument("--batch", type=int, default=250, help="connections opened at once")
    ap.add_argument("--sequential", type=int, default=200, help="new requests one at a time")
    ap.add_argument("--requests", type=int, default=1000, help="new requests with --concurrency in flight")
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--verify", type=int, default=0, help="held connections re-used at the end (0 = all)")
    ap.add_argument("--p99-ms", type=float, default=100.0, help="fail above this p99 for new requests")
    ap.add_argument("--threads", type=int, default=2, help="lacquer worker threads")
    ap.add_argument("--cycles", type=int, default=3,
                    help="times the N connections are opened; all but the last are closed again at once "
                         "(memory the allocator recycles), the last is held and measured")
    ap.add_argument("--open-timeout", type=float, default=180.0, help="give up opening connections after this")
    args = ap.parse_args()
    for path in (LACQUER, ORIGIN):
        if not os.access(path, os.X_OK):
            sys.exit(f"{path} missing: cargo build --release --locked --bin lacquer --example bench_origin")

    # the script holds N client sockets, lacquer N accepted ones plus its upstream pool
    nofile = raise_nofile(args.conns + 1000)
    if nofile < args.conns + 500:
        sys.exit(f"fd limit {nofile} is too low for {args.conns} connections (raise the hard limit)")

    workdir = tempfile.mkdtemp(prefix="lacquer-idle-")
    origin_port, port, admin_port = free_port(), free_port(), free_port()
    origin = lacquer = None
    try:
        origin = subprocess.Popen([ORIGIN, f"{HOST}:{origin_port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(origin_port)
        extra = f'limits:\n  idle_timeout: "{args.idle_timeout}"\n' if args.idle_timeout else ""
        lacquer = start_lacquer(workdir, port, admin_port, origin_port, args.threads, "256MiB", extra)
        lacquer_nofile = nofile_limit_of(lacquer.pid)
        version = lacquer_version()
        load = os.getloadavg()
        args.cycles = max(1, args.cycles)
        deadline = args.cycles * (args.open_timeout + 10) + args.hold + 300
        res = asyncio.run(asyncio.wait_for(run(args, port, admin_port, lacquer.pid), deadline))
        alive = lacquer.poll() is None
    finally:
        if lacquer is not None:
            stop(lacquer)
        if origin is not None:
            stop(origin)
    print(report(args, res, nofile, lacquer_nofile, version, load))

    failures = []
    held = res["held"]
    errors = held["sequential"]["errors"] + held["concurrent"]["errors"] + res["baseline"]["sequential"]["errors"] \
        + res["baseline"]["concurrent"]["errors"]
    if errors:
        failures.append(f"{errors} new requests failed")
    for kind in ("sequential", "concurrent"):
        p99 = held[kind].get("p99")
        if p99 is None or p99 * 1e3 > args.p99_ms:
            failures.append(f"p99 of new requests ({kind}) while holding the connections is {fmt_ms(p99)}, "
                            f"bound {args.p99_ms:g} ms")
    short = [c for c in res["cycles"] if c["opened"] < args.conns]
    if short:
        failures.append(f"only {short[0]['opened']:,} of {args.conns:,} connections opened in cycle {short[0]['cycle']}")
    if res["dropped"]:
        failures.append(f"{res['dropped']:,} held connections closed by lacquer within {res['held_seconds']:.0f} s")
    if res["verify_ok"] < res["verified"]:
        failures.append(f"{res['verified'] - res['verify_ok']:,} of {res['verified']:,} held connections failed a request")
    leaked = [c for c in res["cycles"] if c["fds_closed"] > res["fds_before"] + 50]
    if leaked:
        failures.append(f"lacquer still had {leaked[0]['fds_closed']:,} fds 2 s after {leaked[0]['opened']:,} "
                        f"connections closed (before: {res['fds_before']:,})")
    if not alive:
        failures.append("lacquer exited during the run (see its log)")
    conclude(failures, f"{workdir}/lacquer.log", workdir)


if __name__ == "__main__":
    main()
