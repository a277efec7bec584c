"""What the load-test scripts (idle_conns.py, soak.py) share: where the release binaries are,
free loopback ports, waiting for a listener, starting lacquer in front of one origin, reading an
HTTP/1.1 response, stopping a process, naming the binary measured."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR") or f"{ROOT}/target"
LACQUER = f"{TARGET}/release/lacquer"
HOST = "127.0.0.1"


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"port {port} did not open within {timeout:.0f} s")


def lacquer_config(port, admin_port, origin, threads, max_size, extra=""):
    """A lacquer config for a benchmark: `port` (admin on `admin_port`) in front of one origin
    (`host:port`), no health checks, no access log, `extra` YAML appended."""
    return f"""listen: ["{HOST}:{port}"]
threads: {threads}
admin:
  listen: "{HOST}:{admin_port}"
upstreams:
  - addr: "{origin}"
health_check:
  type: none
cache:
  max_size: "{max_size}"
access_log:
  target: "off"
{extra}"""


def start_lacquer(workdir, port, admin_port, origin_port, threads, max_size, extra=""):
    """Start the release lacquer with `lacquer_config` in front of the origin on `origin_port`.
    Returns the process once both listeners are open; its log is `workdir`/lacquer.log."""
    conf = f"{workdir}/lacquer.yaml"
    with open(conf, "w") as f:
        f.write(lacquer_config(port, admin_port, f"{HOST}:{origin_port}", threads, max_size, extra))
    proc = subprocess.Popen([LACQUER, "--config", conf], stdout=subprocess.DEVNULL,
                            stderr=open(f"{workdir}/lacquer.log", "w"), env={**os.environ, "RUST_LOG": "warn"})
    wait_port(port)
    wait_port(admin_port)
    return proc


def conclude(failures, logs, workdir):
    """End a load test: the failed checks and where the logs are (exit 1), or OK."""
    if failures:
        print("FAILED: " + "; ".join(failures))
        print(f"logs: {logs}")
        sys.exit(1)
    print("OK: every check passed")
    shutil.rmtree(workdir, ignore_errors=True)


def stop(proc, sig=signal.SIGINT):
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def lacquer_version():
    """`lacquer --version` and the commit of the work tree now (`+dirty`: src/ differs from it; the
    binary is whatever was last built)."""
    v = subprocess.run([LACQUER, "--version"], capture_output=True, text=True).stdout.strip() or "lacquer"
    git = ["git", "-C", ROOT]
    commit = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(git + ["status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock"],
                           capture_output=True, text=True).stdout.strip()
    built = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(os.stat(LACQUER).st_mtime))
    tree = f"; work tree at {commit}{'+dirty' if dirty else ''}" if commit else ""
    return f"{v} (binary built {built}{tree})"


async def read_response(reader, method="GET"):
    """One HTTP/1.1 response from an asyncio reader: (status, headers with lower-case names,
    body). Content-Length, chunked, or read to the end (then `connection: close` is implied)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        body = b""
    elif "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(parts)
    else:
        body = await reader.read()
        headers["connection"] = "close"
    return status, headers, body
