"""What the load-test scripts (idle_conns.py, soak.py) share: where the release binaries are,
free loopback ports, waiting for a listener, stopping a process, naming the binary measured."""
import os
import signal
import socket
import subprocess
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
