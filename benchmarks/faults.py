"""Load-and-fault run: the service under load while models reload, trainings die and requests are malformed.

    python -m benchmarks.faults            # writes docs/faults.md

While wrk drives /classify?model=digits, this script forces model reloads (measuring the server's
memory before and after), kills a training run mid-epoch with SIGKILL and starts another that
publishes a new version (picked up by the watcher), and sends malformed requests. It then
reports requests sent, 5xx responses (must be 0), run rows lost (must be 0), that the killed run
is marked failed, and that the service still answers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from app.config import REPO_ROOT
from benchmarks.machine import describe_machine
from benchmarks.serve import Server, multipart, parse_wrk, small_png

ADMIN_KEY = "faults-script-key"

MALFORMED = [
    ("POST", "/classify", b"", "multipart/form-data; boundary=x"),
    ("POST", "/classify", b"--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\nGIF89a\x00\x00\r\n--x--\r\n",
     "multipart/form-data; boundary=x"),
    ("POST", "/classify?k=-1", multipart("a.png", small_png(), "image/png")[0], multipart("a", b"", "")[1]),
    ("POST", "/classify?model=%00", multipart("a.png", small_png(), "image/png")[0], multipart("a", b"", "")[1]),
    ("POST", "/classify", b"\xff" * 5000, "image/png"),
    ("GET", "/runs/..%2F..%2Fetc%2Fpasswd", b"", ""),
    ("GET", "/runs?limit=abc", b"", ""),
    ("POST", "/admin/models/reload", b"", ""),
    ("POST", "/anomaly", b"{not json", "application/json"),
    ("GET", "/similar-words?word=", b"", ""),
]


def call(base: str, method: str, path: str, body: bytes = b"", content_type: str = "", key: str | None = None) -> int:
    request = urllib.request.Request(base + path, data=body or None, method=method)
    if content_type:
        request.add_header("Content-Type", content_type)
    if key:
        request.add_header("X-API-Key", key)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def runs(base: str) -> list[dict]:
    with urllib.request.urlopen(f"{base}/runs?model=digits&limit=100", timeout=30) as response:
        return json.loads(response.read())["data"]


def train(env: dict[str, str], epochs: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "training", "digits", "--epochs", str(epochs), "--limit", "20000", "--quiet"]
    return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def server_errors(server: Server) -> int:
    total = 0
    for line in server.get("/metrics").splitlines():
        if line.startswith("labnets_requests_total{") and 'status="5' in line:
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def run(args: argparse.Namespace) -> str:
    workdir = Path(tempfile.mkdtemp(prefix="labnets-faults-"))
    model_dir = workdir / "models"
    shutil.copytree(args.model_dir / "digits", model_dir / "digits")
    database = f"sqlite:///{workdir / 'runs.sqlite'}"
    server = Server(model_dir, batching=True, ADMIN_API_KEY=ADMIN_KEY, RELOAD_INTERVAL_S="1",
                    DATABASE_URL=database, RUN_STALE_AFTER_S="3600")
    notes: list[str] = []
    try:
        body, kind = multipart("digit.png", small_png(), "image/png")
        (workdir / "body.bin").write_bytes(body)
        (workdir / "load.lua").write_text(
            f'wrk.method = "POST"\nlocal f = io.open("{workdir / "body.bin"}", "rb")\nwrk.body = f:read("*a")\n'
            f'f:close()\nwrk.headers["Content-Type"] = "{kind}"\n')
        load = subprocess.Popen(
            ["wrk", "-t1", "-c8", f"-d{args.duration}s", "--timeout", "10s", "--latency", "-s", str(workdir / "load.lua"),
             f"{server.base}/classify?model=digits"], stdout=subprocess.PIPE, text=True)
        started = time.time()
        runs_before = len(runs(server.base))

        # 1. Forced reloads under load, with the server's memory before and after.
        rss_before = server.rss_mib()
        reload_statuses, rss_steps = [], []
        for index in range(args.reloads):
            reload_statuses.append(call(server.base, "POST", "/admin/models/reload?force=true", key=ADMIN_KEY))
            if (index + 1) % 10 == 0:
                rss_steps.append(f"{server.rss_mib():.0f}")

        # 2. A training run killed mid-epoch, then one that finishes and publishes a version.
        env = {**os.environ, "MODEL_DIR": str(model_dir), "DATA_DIR": str(Path(server.data_dir)),
               "DATABASE_URL": database, "TF_CPP_MIN_LOG_LEVEL": "2", "DEVICE": "cpu"}
        victim = train(env, epochs=50)
        deadline = time.time() + 300
        while time.time() < deadline and not any(r["status"] == "running" and r["history"] for r in runs(server.base)):
            time.sleep(0.5)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        killed_id = next(r["id"] for r in runs(server.base) if r["status"] == "running")
        survivor = train(env, epochs=2)

        # 3. Malformed requests while all that goes on.
        malformed = [call(server.base, m, p, b, c) for m, p, b, c in MALFORMED]

        survivor.wait(timeout=600)
        time.sleep(3)  # let the watcher pick up the new version
        output, _ = load.communicate(timeout=args.duration + 120)
        load_result = parse_wrk(output)
        requests_sent = int(load_result.rps * (time.time() - started))
        for line in output.splitlines():
            if "requests in" in line:
                requests_sent = int(line.split()[0])
        time.sleep(2)  # the watcher (every second) marks the killed run stale
        final_runs = {r["id"]: r for r in runs(server.base)}
        still_ok = call(server.base, "POST", "/classify?model=digits", body, kind) == 200
        served = json.loads(server.get("/models"))["data"][0]["served_version"]
        errors_5xx = server_errors(server)
        rss_end = server.rss_mib()
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    lost = runs_before + 2 - len(final_runs)
    lines = [
        "# Load-and-fault run",
        "",
        f"Machine: {describe_machine()}.",
        "",
        f"Command: `python -m benchmarks.faults --duration {args.duration} --reloads {args.reloads}`. "
        "One uvicorn worker with the watcher on (1 s) and an admin key; wrk keeps 8 connections posting digits "
        "to `/classify?model=digits` the whole time.",
        "",
        "| check | result |",
        "|---|---|",
        f"| requests sent by the load generator | {requests_sent} ({load_result.rps:.0f} req/s, p99 {load_result.p99_ms:.0f} ms) |",
        f"| non-2xx answers or socket errors in the load | {load_result.errors} (socket errors: {load_result.extra['socket_errors']}) |",
        f"| forced reloads of every model under load | {len(reload_statuses)} (statuses {sorted(set(reload_statuses))}) |",
        f"| server RSS before reloads / after every 10 reloads / at the end (after a new version was added), MiB | "
        f"{rss_before:.0f} / {' / '.join(rss_steps)} / {rss_end:.0f} |",
        f"| training run killed with SIGKILL mid-epoch | `{killed_id[:8]}`: status `{final_runs.get(killed_id, {}).get('status')}`, "
        f"error: {final_runs.get(killed_id, {}).get('error')!r} |",
        f"| second training run | status `{next((r['status'] for r in final_runs.values() if r['id'] != killed_id and r['status'] != 'failed'), '?')}`; served version afterwards: {served} |",
        f"| malformed requests sent | {len(malformed)}, statuses {sorted(malformed)} |",
        f"| **5xx responses (all endpoints, from /metrics)** | **{errors_5xx}** |",
        f"| **run rows lost** | **{lost}** |",
        f"| service still answers afterwards | {'yes' if still_ok else 'NO'} |",
    ]
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.faults", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=60, help="Seconds of load.")
    parser.add_argument("--reloads", type=int, default=60)
    parser.add_argument("--model-dir", type=Path, default=REPO_ROOT / "models")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "docs" / "faults.md")
    args = parser.parse_args(argv)
    text = run(args)
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
