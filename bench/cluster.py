#!/usr/bin/env python3
"""Three lacquer nodes and one Redis on this machine (docs/cluster.md), measured:

1. origin requests when 3 nodes each request the same 10,000 cold objects at once (goal: 10,000,
   not 30,000);
2. hit latency (sequential requests on one keep-alive connection, p50/p99) and throughput
   (bench_client, 16 connections) of a memory (L1) hit, a shared-tier (L2) hit and a miss that
   goes to the app;
3. purge propagation over 1,000 purges: the PURGE answer's latency (it returns once every node
   acknowledged) and each other node's delay from publication to application
   (`lacquer_cluster_purge_delay_seconds`, bucket bounds), p50 and p99 (goal p99 < 100 ms).

    ./bench/cluster.py [OBJECTS]          (default 10000; release binaries, built if missing)
Prints a Markdown table for docs/benchmarks.md.
"""
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from loadlib import HOST, LACQUER, ROOT, TARGET, free_port, lacquer_version, start_lacquer, stop, wait_port  # noqa: E402

ORIGIN = f"{TARGET}/release/examples/bench_origin"
CLIENT = f"{TARGET}/release/examples/bench_client"
SITE = "site.test"


def metric(admin_port, name, labels=""):
    """The sum of a metric's samples whose label set contains `labels`."""
    conn = http.client.HTTPConnection(HOST, admin_port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {") and labels in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def histogram_quantiles(admin_ports, name, qs):
    """Quantiles of a histogram summed over nodes, as the upper bounds of their buckets."""
    buckets = {}
    for port in admin_ports:
        conn = http.client.HTTPConnection(HOST, port, timeout=10)
        conn.request("GET", "/metrics")
        for line in conn.getresponse().read().decode().splitlines():
            if line.startswith(name + "_bucket"):
                le = line.split('le="', 1)[1].split('"', 1)[0]
                bound = float("inf") if le == "+Inf" else float(le)
                buckets[bound] = buckets.get(bound, 0) + float(line.rsplit(" ", 1)[1])
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0
    out = []
    for q in qs:
        out.append(next((b for b in bounds if buckets[b] >= q * total), float("nan")))
    return out, total


def fill(port, prefix, n, conc):
    r = subprocess.run([CLIENT, "fill", f"http://{HOST}:{port}", prefix, str(n), str(conc)],
                       capture_output=True, text=True, env={**os.environ, "BENCH_HOST": SITE})
    return json.loads(r.stdout.strip().splitlines()[-1])


def latencies(port, paths):
    """Per-request seconds, sequential on one keep-alive connection."""
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    out = []
    for p in paths:
        t = time.perf_counter()
        conn.request("GET", p, headers={"Host": SITE})
        r = conn.getresponse()
        r.read()
        out.append(time.perf_counter() - t)
        status = r.getheader("cache-status", "")
        if r.status != 200:
            raise RuntimeError(f"{p}: {r.status} {status}")
    return out


def pct(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def main():
    objects = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    if not all(os.path.exists(b) for b in (LACQUER, ORIGIN, CLIENT)) and not os.environ.get("SKIP_BUILD"):
        subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "lacquer", "--example",
                        "bench_origin", "--example", "bench_client"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="lacquer-cluster-")
    procs = []
    try:
        redis_port = free_port()
        procs.append(subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--bind", HOST, "--save", "", "--appendonly", "no",
             "--maxmemory", "2gb", "--maxmemory-policy", "volatile-lru"], stdout=subprocess.DEVNULL))
        wait_port(redis_port)
        origin_port = free_port()
        procs.append(subprocess.Popen([ORIGIN, f"{HOST}:{origin_port}"], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        wait_port(origin_port)
        nodes = []
        for name in ("a", "b", "c"):
            d = f"{work}/{name}"
            os.makedirs(d)
            port, admin = free_port(), free_port()
            extra = (f"cluster:\n  redis: \"redis://{HOST}:{redis_port}/0\"\n  node: \"{name}\"\n"
                     "  purge_ack_timeout: 1s\n")
            procs.append(start_lacquer(d, port, admin, origin_port, 1, "1GiB", extra))
            nodes.append((port, admin))
        time.sleep(2)  # every node's heartbeat is in
        admins = [a for _, a in nodes]
        rows = []

        # 1. three nodes, the same cold objects at once
        fills = [subprocess.Popen([CLIENT, "fill", f"http://{HOST}:{p}", "1k/cold", str(objects), "16"],
                                  stdout=subprocess.PIPE, text=True, env={**os.environ, "BENCH_HOST": SITE})
                 for p, _ in nodes]
        results = [json.loads(f.communicate()[0].strip().splitlines()[-1]) for f in fills]
        origin_requests = sum(metric(a, "lacquer_upstream_requests_total") for a in admins)
        errors = sum(r["errors"] for r in results)
        rows.append(f"| origin requests, 3 nodes x {objects:,} cold 1 KiB objects requested at once "
                    f"(16 connections per node) | {origin_requests:,.0f} (goal {objects:,}; "
                    f"{errors} client errors; {max(r['seconds'] for r in results):.1f} s) |")

        # 2. latency and throughput: memory hit, shared hit, app
        n = 2000
        (pa, _), (pb, _), (pc, _) = nodes
        fill(pa, "1k/l2", n, 16)          # a fetches: in a's memory and in Redis
        fill(pa, "1k/l1", 1, 1)
        time.sleep(1)  # a's writes to Redis (in the background) are done
        l1 = latencies(pa, ["/1k/l1/0"] * n)
        l2 = latencies(pb, [f"/1k/l2/{i}" for i in range(n)])   # b: not in memory, in Redis
        app = latencies(pc, [f"/1k/app/{i}" for i in range(n)])  # c: nowhere yet
        for label, v in (("memory (L1) hit", l1), ("shared (L2) hit", l2), ("miss to the app", app)):
            rows.append(f"| latency, {label}, 1 KiB, sequential | p50 {pct(v, 0.5) * 1e3:.3f} ms, "
                        f"p99 {pct(v, 0.99) * 1e3:.3f} ms |")
        m = 20000
        fill(pa, "1k/t2", m, 16)
        t2 = fill(pb, "1k/t2", m, 16)
        tapp = fill(pc, "1k/tapp", m, 16)
        fill(pb, "1k/t1", m, 16)
        t1 = fill(pb, "1k/t1", m, 16)
        for label, r in (("memory (L1) hits", t1), ("shared (L2) hits", t2), ("misses to the app", tapp)):
            rows.append(f"| throughput, {label}, {m:,} distinct 1 KiB objects, 16 connections "
                        f"(bench_client, reqwest) | {m / r['seconds']:,.0f} req/s ({r['errors']} errors) |")

        # 3. purge propagation
        purges = 1000
        fill(pa, "1k/purge", purges, 16)
        conn = http.client.HTTPConnection(HOST, pa, timeout=10)
        answers = []
        acked_all = 0
        for i in range(purges):
            t = time.perf_counter()
            conn.request("PURGE", f"/1k/purge/{i}", headers={"Host": SITE})
            r = conn.getresponse()
            body = json.loads(r.read() or b"{}")
            answers.append(time.perf_counter() - t)
            if r.status == 200 and all(body.get("nodes", {}).get(x) for x in ("a", "b", "c")):
                acked_all += 1
        (d50, d99), count = histogram_quantiles(admins[1:], "lacquer_cluster_purge_delay_seconds", (0.5, 0.99))
        rows.append(f"| purge answer (returns once all 3 nodes acknowledged), {purges:,} URL purges "
                    f"| p50 {pct(answers, 0.5) * 1e3:.1f} ms, p99 {pct(answers, 0.99) * 1e3:.1f} ms; "
                    f"{acked_all:,} of {purges:,} with 3 acknowledgements |")
        rows.append(f"| purge propagation, publication to application on b and c "
                    f"({count:,.0f} applications; histogram bucket bounds) | p50 <= {d50 * 1e3:g} ms, "
                    f"p99 <= {d99 * 1e3:g} ms (goal p99 < 100 ms) |")

        print(f"{lacquer_version()}; 3 nodes (threads: 1 each), redis-server, bench origin, on one "
              f"{os.cpu_count()}-core machine\n")
        print("| measure | result |\n|---|---|")
        print("\n".join(rows))
    finally:
        for p in procs:
            stop(p)


if __name__ == "__main__":
    main()
