#!/usr/bin/env python3
"""lacquer against Varnish and nginx proxy_cache, on one machine, in one run.

Starts one origin (examples/bench_origin.rs) and, in front of it, lacquer, Varnish (stock VCL,
malloc storage) and nginx (proxy_cache in tmpfs, cache lock on, sendfile, tcp_nopush,
tcp_nodelay), each pinned to CPU 0 with the load generator (wrk) and the origin on CPU 1. While
one target is measured the others are stopped (SIGSTOP), so it has CPU 0 alone. Measures,
interleaving the targets and repeating:

  hits     wrk -c64 on one cached URL per size (1 KiB, 16 KiB, 256 KiB): req/s, p50, p99,
           CPU microseconds per request
  stampede 200 simultaneous requests for one cold 100 ms URL: origin requests, latency spread
  memory   bytes per cached object after 100,000 distinct 1 KiB objects (nginx: RSS + cache files)
  scale    hit throughput with 1k, 100k and 1M objects cached (lacquer and Varnish): random URLs
           over all of them, and over a hot set of 1,000 of them

Prints a Markdown report, also written to bench/results/latest.md (bench/results/partial.md for
a run of part of the suite: --quick, --only or --targets). Usage:
  python3 bench/run.py [--rounds 3] [--duration 8] [--quick]
                       [--only hits,stampede,memory,scale] [--targets varnish,nginx]
"""
import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
import urllib.request

from loadlib import lacquer_config, wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORIGIN = "127.0.0.1:8090"
PORTS = {"lacquer": 6090, "varnish": 6091, "nginx": 6092}
SIZES = ["1k", "16k", "256k"]
SECTIONS = ["hits", "stampede", "memory", "scale"]
TARGETS = ["lacquer", "varnish", "nginx"]
SERVER_CPU = "0"
LOAD_CPU = "1"


def get(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read()


def pids_of(pattern):
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def rss(pids):
    total = 0
    for p in pids:
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def cpu_ticks(pids):
    total = 0
    for p in pids:
        try:
            fields = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total


def signal_all(pids, sig):
    for p in pids:
        try:
            os.kill(p, sig)
        except OSError:
            pass


class Targets:
    def __init__(self, workdir):
        self.dir = workdir
        self.procs = {}
        self.nginx_caches = []
        self.nginx_cache = None

    def start_origin(self):
        self.origin = subprocess.Popen(
            ["taskset", "-c", LOAD_CPU, f"{ROOT}/target/release/examples/bench_origin", ORIGIN],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(8090)

    def start(self, name, max_size="2GiB"):
        d = self.dir
        if name.startswith("lacquer"):
            # "lacquer", or "lacquer-N" for the scale instances (own ports, own config)
            conf = f"{d}/{name}.yaml"
            open(conf, "w").write(lacquer_config(PORTS[name], PORTS[name] + 100, ORIGIN, 1, max_size))
            p = subprocess.Popen(["taskset", "-c", SERVER_CPU, f"{ROOT}/target/release/lacquer", "--config", conf],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "error"})
            self.procs[name] = (p, lambda: [p.pid])
        elif name.startswith("varnish"):
            # "varnish", or "varnish-N" for the scale instances (own ports and work directory)
            vcl = f"{d}/default.vcl"
            host, port = ORIGIN.split(":")
            open(vcl, "w").write(f'vcl 4.1;\nbackend default {{ .host = "{host}"; .port = "{port}"; }}\n')
            vdir = f"{d}/{name}"
            os.makedirs(vdir, exist_ok=True)
            shutil.chown(vdir, "varnish", "varnish") if shutil.which("varnishd") else None
            mgmt = 6095 if name == "varnish" else PORTS[name] + 300
            p = subprocess.Popen(["taskset", "-c", SERVER_CPU, "varnishd", "-F", "-a", f"127.0.0.1:{PORTS[name]}",
                                  "-f", vcl, "-s", f"malloc,{max_size.replace('GiB', 'G')}", "-n", vdir,
                                  "-T", f"127.0.0.1:{mgmt}"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.procs[name] = (p, lambda: pids_of(f"varnishd.*{vdir}") + pids_of("cache-main"))
        elif name == "nginx":
            # in tmpfs when there is one, as an nginx set up for speed keeps it
            shm = "/dev/shm" if os.path.isdir("/dev/shm") else d
            cache = tempfile.mkdtemp(prefix="lacquer-bench-nginx-", dir=shm)
            self.nginx_caches.append(cache)
            self.nginx_cache = cache
            conf = f"{d}/nginx.conf"
            open(conf, "w").write(f"""user root;
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log error;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  proxy_cache_path {cache} levels=1:2 keys_zone=lacquerbench:256m max_size={max_size.replace('GiB', 'g')} inactive=1h use_temp_path=off;
  server {{
    listen 127.0.0.1:{PORTS['nginx']};
    # the ceiling: a constant 1 KiB answered from nginx's own config, no cache, no proxy
    location = /ceiling/1k {{
      default_type text/html;
      return 200 "{'x' * 1023}\n";
    }}
    location / {{
      proxy_pass http://{ORIGIN};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache lacquerbench;
      proxy_cache_key $scheme$host$request_uri;
      proxy_cache_lock on;
      proxy_cache_lock_timeout 10s;
    }}
  }}
}}
""")
            p = subprocess.Popen(["taskset", "-c", SERVER_CPU, "nginx", "-c", conf],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.procs[name] = (p, lambda: pids_of(f"nginx.*{conf}") + pids_of("nginx: worker") + pids_of("nginx: cache"))
        wait_port(PORTS[name])
        time.sleep(0.5)

    def pids(self, name):
        return self.procs[name][1]()

    def stop(self, name):
        p, _ = self.procs.pop(name)
        p.send_signal(signal.SIGINT if name != "nginx" else signal.SIGQUIT)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
        if name.startswith("varnish") and not any(n.startswith("varnish") for n in self.procs):
            subprocess.run(["pkill", "-9", "-f", "cache-main"], capture_output=True)
        if name == "nginx":
            subprocess.run(["pkill", "-9", "-f", "nginx: "], capture_output=True)
        time.sleep(0.5)

    def stop_all(self):
        for name in list(self.procs):
            self.stop(name)
        self.origin.terminate()
        for c in self.nginx_caches:
            shutil.rmtree(c, ignore_errors=True)


UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def wrk(url, duration, connections=64, script=None):
    cmd = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
    if script:
        cmd += ["-s", script]
    out = subprocess.run(cmd + [url], capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    lat = {}
    for q, v, u in re.findall(r"\s+(50|99)%\s+([\d.]+)(us|ms|s)\b", out):
        lat[q] = float(v) * UNIT[u]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "requests": total, "p50": lat.get("50"), "p99": lat.get("99"),
            "non2xx": int(errors.group(1)) if errors else 0}


def client(*args):
    out = subprocess.run(["taskset", "-c", LOAD_CPU, f"{ROOT}/target/release/examples/bench_client", *map(str, args)],
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def fmt_s(s):
    return f"{s * 1e3:.2f} ms" if s >= 1e-3 else f"{s * 1e6:.0f} µs"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--quick", action="store_true", help="1 round, 3 s, no 1M scale point")
    ap.add_argument("--only", default=",".join(SECTIONS),
                    help=f"the sections to run, comma-separated (default: all of {','.join(SECTIONS)})")
    ap.add_argument("--targets", default=",".join(TARGETS),
                    help="what lacquer is measured against, comma-separated (default: varnish,nginx)")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.duration = 1, 3
    only = args.only.split(",")
    for x in only:
        if x not in SECTIONS:
            ap.error(f"--only: unknown section {x!r} (known: {', '.join(SECTIONS)})")
    names = ["lacquer"] + [n for n in args.targets.split(",") if n != "lacquer"]
    for x in names:
        if x not in TARGETS:
            ap.error(f"--targets: unknown target {x!r} (known: {', '.join(TARGETS)})")
    others = [n for n in ["varnish", "nginx"] if n in names]
    workdir = tempfile.mkdtemp(prefix="lacquer-bench-")
    os.chmod(workdir, 0o755)
    t = Targets(workdir)
    t.start_origin()
    hits, ceiling, stampede, memory, scale, hot, points, scaled = {}, [], {}, {}, {}, {}, [], []
    try:
        if "hits" in only or "stampede" in only:
            for n in names:
                t.start(n)
        # ---- hits, interleaved ----
        if "hits" in only:
            hits = {(n, s): [] for n in names for s in SIZES}
            for r in range(args.rounds):
                for s in SIZES:
                    for n in names:
                        url = f"http://127.0.0.1:{PORTS[n]}/{s}/hot"
                        get(url), get(url)  # warm: miss, then hit
                        pids = t.pids(n)
                        # the measured target alone on its core
                        paused = [p for m in names if m != n for p in t.pids(m)]
                        signal_all(paused, signal.SIGSTOP)
                        try:
                            c0 = cpu_ticks(pids)
                            res = wrk(url, args.duration)
                            res["cpu_us"] = (cpu_ticks(pids) - c0) / os.sysconf("SC_CLK_TCK") / max(res["requests"], 1) * 1e6
                        finally:
                            signal_all(paused, signal.SIGCONT)
                        hits[(n, s)].append(res)
                # what one core can serve here at all: nginx answering a constant 1 KiB
                if "nginx" in names:
                    ceiling.append(wrk(f"http://127.0.0.1:{PORTS['nginx']}/ceiling/1k", args.duration))
        # ---- stampede ----
        if "stampede" in only:
            stampede = {n: [] for n in names}
            for r in range(args.rounds):
                for n in names:
                    path = f"/slow/stampede-{n}-{r}-{time.time_ns()}"
                    res = client("stampede", f"http://127.0.0.1:{PORTS[n]}{path}", 200)
                    res["origin"] = int(get(f"http://{ORIGIN}/_count?{path}"))
                    stampede[n].append(res)
        for n in names:
            if n in t.procs:
                t.stop(n)

        # ---- memory ----
        if "memory" in only:
            for n in names:
                t.start(n)
                get(f"http://127.0.0.1:{PORTS[n]}/1k/warm")
                time.sleep(0.5)
                before = rss(t.pids(n))
                disk_before = int(subprocess.run(["du", "-sb", t.nginx_cache], capture_output=True, text=True).stdout.split()[0]) if n == "nginx" else 0
                fill = client("fill", f"http://127.0.0.1:{PORTS[n]}", "1k/mem", 100_000, 32)
                time.sleep(2)
                after = rss(t.pids(n))
                disk_after = int(subprocess.run(["du", "-sb", t.nginx_cache], capture_output=True, text=True).stdout.split()[0]) if n == "nginx" else 0
                total = (after - before) + (disk_after - disk_before)
                memory[n] = {"bytes_per_object": total / 100_000, "rss_delta": after - before,
                             "disk_delta": disk_after - disk_before, "fill_errors": fill["errors"],
                             "fill_seconds": fill["seconds"]}
                t.stop(n)

        # ---- scale ----
        # one instance per cache size, all filled first and then measured interleaved, so
        # that machine drift does not land on one size; a 2 s unmeasured run before each
        # measured one lets a freshly filled cache finish its housekeeping
        # (Varnish too, for comparison: how much of the fall-off is any cache's, not lacquer's)
        if "scale" in only:
            points = [1_000, 100_000] + ([] if args.quick else [1_000_000])
            scaled = [n for n in ["lacquer", "varnish"] if n in names]
            scale = {(n, n_obj): [] for n in scaled for n_obj in points}
            for i, n_obj in enumerate(points):
                open(f"{workdir}/random-{n_obj}.lua", "w").write(
                    f'math.randomseed(42)\nrequest = function() return wrk.format(nil, "/1k/scale/" .. math.random(0, {n_obj - 1})) end\n')
                for j, n in enumerate(scaled):
                    name = f"{n}-{n_obj}"
                    PORTS[name] = 6300 + 10 * j + i
                    t.start(name, max_size="4GiB")
                    client("fill", f"http://127.0.0.1:{PORTS[name]}", "1k/scale", n_obj, 32)
            # two patterns per size: random over all N objects (every hit a walk through memory
            # the CPU's caches cannot hold) and random over the first 1,000 of them (the same hot
            # set as the 1,000-object instance: what N objects cached cost the hit path itself)
            hot = {(n, n_obj): [] for n in scaled for n_obj in points[1:]}
            for r in range(args.rounds):
                for n_obj in points:
                    for n in scaled:
                        url = f"http://127.0.0.1:{PORTS[f'{n}-{n_obj}']}"
                        for runs, lua in [(scale[(n, n_obj)], f"{workdir}/random-{n_obj}.lua"),
                                          (hot.get((n, n_obj)), f"{workdir}/random-{points[0]}.lua")]:
                            if runs is not None:
                                wrk(url, 2, script=lua)
                                runs.append(wrk(url, args.duration, script=lua))
            for n_obj in points:
                for n in scaled:
                    t.stop(f"{n}-{n_obj}")
    finally:
        t.stop_all()

    # ---- report ----
    def med(xs):
        return statistics.median(xs)

    versions = {
        "lacquer": subprocess.run([f"{ROOT}/target/release/lacquer", "--version"], capture_output=True, text=True).stdout.strip(),
        "varnish": subprocess.run(["varnishd", "-V"], capture_output=True, text=True).stderr.splitlines()[0],
        "nginx": subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip(),
        "wrk": subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[0],
    }
    versions = [v for n, v in versions.items() if n in names or n == "wrk"]
    lines = [f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {args.rounds} round(s) of {args.duration} s, "
             f"medians. Versions: {'; '.join(versions)}.", ""]
    if hits:
        vs = "".join(f" vs {n.capitalize() if n == 'varnish' else n} |" for n in others)
        lines += ["### Cache hits (wrk -t1 -c64, one URL)", "",
                  f"| size | target | req/s | p50 | p99 | CPU µs/req |{vs}", "|---|---|---|---|---|---|" + "---|" * len(others)]
        for s in SIZES:
            base = {n: med([r["rps"] for r in hits[(n, s)]]) for n in names}
            for n in names:
                rs = hits[(n, s)]
                lines.append(f"| {s} | {n} | {base[n]:,.0f} | {fmt_s(med([r['p50'] for r in rs]))} | "
                             f"{fmt_s(med([r['p99'] for r in rs]))} | {med([r['cpu_us'] for r in rs]):.1f} |"
                             + "".join(f" {base[n] / base[o]:.2f}x |" for o in others))
    if hits and others:
        # each round runs the targets back to back: a ratio within a round is less exposed
        # to the machine's drift than a ratio of medians taken across rounds
        lines += ["", "Ratios within each round (lacquer's req/s over the other's in the same round): median (lowest – highest)", "",
                  f"| size |{vs}", "|---|" + "---|" * len(others)]
        for s in SIZES:
            cells = []
            for other in others:
                rs = [a["rps"] / b["rps"] for a, b in zip(hits[("lacquer", s)], hits[(other, s)])]
                cells.append(f"{med(rs):.2f}x ({min(rs):.2f} – {max(rs):.2f})")
            lines.append(f"| {s} | {' | '.join(cells)} |")
    if ceiling:
        top = med([r["rps"] for r in ceiling])
        against = (f"{top / med([r['rps'] for r in hits[('varnish', '1k')]]):.2f}x Varnish's 1 KiB hits, "
                   if "varnish" in names else "")
        lines += ["", f"Ceiling (nginx answering a constant 1 KiB from its config, no cache or proxy, same core): "
                  f"{top:,.0f} req/s, p99 {fmt_s(med([r['p99'] for r in ceiling]))}; {against}"
                  f"lacquer's 1 KiB hits at {med([r['rps'] for r in hits[('lacquer', '1k')]]) / top:.0%} of it."]
    if stampede:
        lines += ["", "### Stampede (200 simultaneous requests, one cold URL, origin takes 100 ms)", "",
                  "| target | origin requests | min | p50 | p99 | max | errors |", "|---|---|---|---|---|---|---|"]
        for n in names:
            rs = stampede[n]
            lines.append(f"| {n} | {', '.join(str(r['origin']) for r in rs)} | {fmt_s(med([r['min'] for r in rs]))} | "
                         f"{fmt_s(med([r['p50'] for r in rs]))} | {fmt_s(med([r['p99'] for r in rs]))} | "
                         f"{fmt_s(med([r['max'] for r in rs]))} | {sum(r['errors'] for r in rs)} |")
    if memory:
        lines += ["", "### Memory (100,000 distinct 1 KiB objects)", "",
                  "| target | bytes per object | overhead beyond the 1 KiB body | RSS growth | cache files |", "|---|---|---|---|---|"]
        for n in names:
            m = memory[n]
            lines.append(f"| {n} | {m['bytes_per_object']:,.0f} | {m['bytes_per_object'] - 1024:,.0f} | "
                         f"{m['rss_delta'] / 2**20:.0f} MiB | {m['disk_delta'] / 2**20:.0f} MiB |")
    if scale:
        lines += ["", "### Scale (N cached 1 KiB objects, one instance per N, interleaved)", "",
                  "Random hits over all N objects, and over 1,000 of them (the hot set of the 1,000-object instance).", "",
                  "| objects cached | target | all N: req/s | p99 | vs 1,000 | hot 1,000: req/s | p99 | vs 1,000 |",
                  "|---|---|---|---|---|---|---|---|"]
        for n_obj in points:
            for n in scaled:
                first = med([r["rps"] for r in scale[(n, points[0])]])
                cells = []
                for runs in [scale[(n, n_obj)], hot.get((n, n_obj), scale[(n, n_obj)])]:
                    cells.append(f"{med([r['rps'] for r in runs]):,.0f} | {fmt_s(med([r['p99'] for r in runs]))} | "
                                 f"{med([r['rps'] for r in runs]) / first:.2f}")
                lines.append(f"| {n_obj:,} | {n} | {' | '.join(cells)} |")
    text = "\n".join(lines) + "\n"
    os.makedirs(f"{ROOT}/bench/results", exist_ok=True)
    # a run of part of the suite does not replace the last whole run's report
    whole = set(only) == set(SECTIONS) and set(names) == set(TARGETS) and not args.quick
    open(f"{ROOT}/bench/results/{'latest' if whole else 'partial'}.md", "w").write(text)
    print(text)
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
