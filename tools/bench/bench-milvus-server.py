#!/usr/bin/env python3
"""Milvus standalone (the `milvus` package from PyPI) for `quiver-bench standalone --milvus`.

Started by tools/bench/src/standalone/milvus_server.rs with the python of the venv that has
`milvus` (see `crate::pyvenv::milvus_server_python`), in a process group of its own. Through the
package's module API (`milvus.default_server`) it writes the server's configuration under --dir
(data, logs, etcd), has it listen for gRPC on --port (the other ports the package picks, free ones
from its defaults up), starts the `milvus run standalone` binary and waits (at most --start-secs)
until its /healthz answers OK.

The binaries the package ships compressed are unpacked into --bin-cache once and shared by every
run (the package would otherwise unpack ~250 MB into each data dir); `<dir>/bin` links there.

stdout: one JSON object per line: {"event": "spawned", "pid", "port", "webservice_port", "logs"}
as soon as the binary runs, then {"event": "ready", "secs"} or {"event": "failed", "error"} (and
exit status 1). Then it serves until stdin reaches EOF, SIGTERM or SIGINT, and stops the server
(SIGTERM, SIGKILL after --stop-secs). The server binary gets SIGKILL if this process dies first
(PR_SET_PDEATHSIG), so it never outlives the bench.
"""

import argparse
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
import types

PR_SET_PDEATHSIG = 1


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", required=True, help="base dir: configs, data, logs (created)")
    p.add_argument("--port", type=int, required=True, help="gRPC port (Milvus' proxy.port)")
    p.add_argument("--bin-cache", default="", help="where the unpacked binaries are kept ('' = in --dir)")
    p.add_argument("--start-secs", type=float, default=120.0, help="how long to wait for /healthz")
    p.add_argument("--stop-secs", type=float, default=10.0, help="SIGTERM → SIGKILL grace")
    p.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra milvus.yaml setting by dotted key, e.g. dataCoord.segment.maxSize=1024 (repeatable)",
    )
    return p.parse_args(argv)


def emit(obj):
    print(json.dumps(obj), flush=True)


def config_value(text):
    """`--config` values as the package's own `--extra-config` reads them."""
    if text.isdigit():
        return int(text)
    if text.replace(".", "", 1).isdigit():
        return float(text)
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def die_with_parent():
    """preexec_fn of the server binary: SIGKILL when this launcher dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def main(argv):
    args = parse_args(argv)
    import milvus

    # The package starts the binary with subprocess.Popen: give it the death signal above,
    # without touching subprocess for anyone else.
    real_popen = subprocess.Popen

    def popen(*a, **kw):
        kw.setdefault("preexec_fn", die_with_parent)
        return real_popen(*a, **kw)

    milvus.subprocess = types.SimpleNamespace(Popen=popen, TimeoutExpired=subprocess.TimeoutExpired)

    base = os.path.abspath(args.dir)
    os.makedirs(base, exist_ok=True)
    if args.bin_cache:
        cache = os.path.abspath(args.bin_cache)
        os.makedirs(cache, exist_ok=True)
        link = os.path.join(base, "bin")
        if not os.path.lexists(link):
            os.symlink(cache, link)

    server = milvus.default_server
    server.wait_for_started = False
    server.set_base_dir(base)
    server.listen_port = args.port
    for kv in args.config:
        if "=" not in kv:
            emit({"event": "failed", "error": f"--config wants KEY=VALUE, got {kv!r}"})
            return 1
        key, value = kv.split("=", 1)
        server.config.set(key, config_value(value))

    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def shutdown():
        proc = server.server_proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=args.stop_secs)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        server.server_proc = None
        for fd in server.proc_fds.values():
            fd.close()
        server.proc_fds.clear()

    logs = os.path.join(base, "logs")
    started = time.monotonic()
    try:
        server.start()
    except Exception as e:  # reported to the bench, which shows the log path
        emit({"event": "failed", "error": f"{type(e).__name__}: {e}", "logs": logs})
        shutdown()
        return 1
    emit(
        {
            "event": "spawned",
            "pid": server.server_proc.pid,
            "port": server.listen_port,
            "webservice_port": server.webservice_port,
            "logs": logs,
        }
    )
    try:
        server.wait_started(timeout=int(args.start_secs * 1000))
    except Exception as e:
        code = server.server_proc.poll() if server.server_proc is not None else None
        emit(
            {
                "event": "failed",
                "error": f"{type(e).__name__}: {e}" + (f" (server exited with {code})" if code is not None else ""),
                "logs": logs,
            }
        )
        shutdown()
        return 1
    emit({"event": "ready", "secs": time.monotonic() - started})

    # EOF on stdin (the bench closed it or died) also stops the server.
    def watch_stdin():
        try:
            while sys.stdin.readline():
                pass
        finally:
            stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    while not stop.is_set():
        proc = server.server_proc
        if proc is not None and proc.poll() is not None:
            print(f"milvus server exited with {proc.returncode}; logs in {logs}", file=sys.stderr)
            shutdown()
            return 1
        stop.wait(0.5)
    shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
