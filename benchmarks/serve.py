"""Load benchmark: every model endpoint against a no-model baseline doing the same HTTP work.

    python -m benchmarks.serve                # writes docs/benchmarks.md
    python -m benchmarks.serve --duration 5   # a quick look

Starts the service (uvicorn, one worker) on loopback with `BENCHMARK_BASELINES=true`, drives each
endpoint and its baseline with wrk (`apt-get install wrk`) at a fixed number of connections, and
reports requests/s, p50, p99, errors, the ratio to the baseline, the batch-size histogram from
/metrics and the server's resident memory before and after. Heavy models (imagenet, trees) are
also run with batching off, to show what batching buys.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from app.config import REPO_ROOT
from benchmarks.machine import describe_machine

HEAVY_MODELS = ("imagenet", "trees")


@dataclass
class Request:
    method: str
    path: str
    body: bytes = b""
    content_type: str = ""


@dataclass
class Scenario:
    name: str
    model: str
    request: Request
    baseline: Request | None
    target_ratio: float | None = None
    duration: float | None = None


@dataclass
class Result:
    label: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    extra: dict = field(default_factory=dict)
    requests: int = 0  # answered during the measurement, as wrk counts them


# --- request bodies -----------------------------------------------------------------------

def multipart(filename: str, data: bytes, content_type: str) -> tuple[bytes, str]:
    boundary = "labnetsbenchmarkboundary"
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def small_png() -> bytes:
    """A 28x28 handwritten-like digit: a stroke pattern, light on black."""
    image = np.zeros((28, 28), np.uint8)
    image[5:23, 12:16] = 255
    image[5:8, 8:20] = 200
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def photo_jpeg(size: int = 320) -> bytes:
    rng = np.random.default_rng(0)
    pixels = (rng.random((size, size, 3)) * 60 + np.linspace(80, 200, size)[None, :, None]).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def upload(path: str, data: bytes, filename: str, content_type: str) -> Request:
    body, kind = multipart(filename, data, content_type)
    return Request("POST", path, body, kind)


def scenarios(models: dict[str, dict]) -> list[Scenario]:
    png, jpeg = small_png(), photo_jpeg()
    png_baseline = upload("/baseline/upload", png, "digit.png", "image/png")
    jpeg_baseline = upload("/baseline/upload", jpeg, "photo.jpg", "image/jpeg")
    beat = json.dumps({"records": [[float(np.sin(i / 10)) for i in range(140)]]}).encode()
    found = []
    if "digits" in models:
        found.append(Scenario("digits", "digits", upload("/classify?model=digits", png, "digit.png", "image/png"),
                              png_baseline, 0.8))
    if "fashion" in models:
        found.append(Scenario("fashion", "fashion", upload("/classify?model=fashion", png, "item.png", "image/png"),
                              png_baseline, 0.6))
    if "ecg" in models:
        found.append(Scenario("ecg", "ecg", Request("POST", "/anomaly", beat, "application/json"),
                              Request("POST", "/baseline/records", beat, "application/json"), 0.6))
    if "words" in models:
        word = next((w for w in ("state", "government", "the") if w in models["words"]["labels"]), "the")
        found.append(Scenario("words", "words", Request("GET", f"/similar-words?word={word}&k=10"),
                              Request("GET", f"/baseline/get?word={word}&k=10"), 0.8))
    if "imagenet" in models:
        found.append(Scenario("imagenet", "imagenet", upload("/classify?model=imagenet", jpeg, "photo.jpg",
                                                             "image/jpeg"), jpeg_baseline))
    if "trees" in models:
        found.append(Scenario("trees", "trees", upload("/detect?model=trees", jpeg, "photo.jpg", "image/jpeg"),
                              jpeg_baseline))
    return found


# --- the server -----------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def task_cpu_seconds(task: Path) -> float:
    """CPU seconds (user + system) one thread has used, from its /proc/<pid>/task/<tid> folder."""
    fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """uvicorn in a subprocess, on loopback, with its own data dir."""

    def __init__(self, model_dir: Path, batching: bool, **settings: str):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.data_dir = tempfile.mkdtemp(prefix="labnets-bench-")
        env = {**os.environ, "MODEL_DIR": str(model_dir), "DATA_DIR": self.data_dir, "DEVICE": "cpu",
               "BENCHMARK_BASELINES": "true", "BATCHING": str(batching).lower(), "LOG_LEVEL": "WARNING",
               "TF_CPP_MIN_LOG_LEVEL": "2", **settings}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(self.port),
             "--no-access-log", "--log-level", "warning"],
            env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                if json.loads(self.get("/ready"))["ready"]:
                    return
            except Exception:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError("the service did not become ready within 180 s")

    def get(self, path: str) -> str:
        with urllib.request.urlopen(self.base + path, timeout=10) as response:
            return response.read().decode()

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def cpu_seconds(self) -> tuple[float, float]:
        """CPU time used so far by the server's event-loop thread and by all its other threads."""
        loop = others = 0.0
        for task in Path(f"/proc/{self.process.pid}/task").iterdir():
            try:
                seconds = task_cpu_seconds(task)
            except OSError:  # the thread ended meanwhile
                continue
            if task.name == str(self.process.pid):
                loop += seconds
            else:
                others += seconds
        return loop, others

    def batch_histogram(self, model: str) -> dict[str, float]:
        pattern = re.compile(rf'labnets_batch_rows_bucket\{{le="([^"]+)",model="{model}"\}} (\S+)')
        return {le: float(count) for le, count in pattern.findall(self.get("/metrics"))}

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.data_dir, ignore_errors=True)


# --- the load generator -----------------------------------------------------------------------

def wrk(base: str, request: Request, connections: int, duration: float, workdir: Path) -> Result:
    body_path = workdir / "body.bin"
    body_path.write_bytes(request.body)
    script = workdir / "request.lua"
    lines = [f'wrk.method = "{request.method}"']
    if request.body:
        lines += [f'local f = io.open("{body_path}", "rb")', "wrk.body = f:read(\"*a\")", "f:close()",
                  f'wrk.headers["Content-Type"] = "{request.content_type}"']
    script.write_text("\n".join(lines) + "\n")
    command = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", "10s", "--latency",
               "-s", str(script),
               base + request.path]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return parse_wrk(output)


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def parse_wrk(output: str) -> Result:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    p50 = _ms(re.search(r"\s50%\s+(\S+)", output).group(1))
    p99 = _ms(re.search(r"\s99%\s+(\S+)", output).group(1))
    errors = 0
    if match := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        errors += int(match.group(1))
    socket_errors = 0
    if match := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output):
        socket_errors = sum(int(g) for g in match.groups())
    return Result("", rps, p50, p99, errors + socket_errors, {"socket_errors": socket_errors}, requests)


def histogram_delta(before: dict[str, float], after: dict[str, float]) -> str:
    """Cumulative bucket counts → 'rows: batches' for the batches run during the measurement."""
    parts, previous = [], 0.0
    for le in sorted(after, key=lambda b: float("inf") if b == "+Inf" else float(b)):
        cumulative = after[le] - before.get(le, 0.0)
        count = cumulative - previous
        previous = cumulative
        if count:
            parts.append(f"≤{le.split('.')[0]}: {int(count)}")
    return ", ".join(parts) or "–"


# --- the run ---------------------------------------------------------------------------------

def measure(server: Server, request: Request, connections: int, duration: float, label: str,
            workdir: Path, model: str | None = None) -> Result:
    wrk(server.base, request, connections, min(2.0, duration), workdir)  # warm-up
    before = server.batch_histogram(model) if model else {}
    cpu_before = server.cpu_seconds()
    result = wrk(server.base, request, connections, duration, workdir)
    result.label = label
    served = max(result.requests, 1)
    result.extra["cpu_us"] = tuple((after - start) / served * 1e6
                                   for start, after in zip(cpu_before, server.cpu_seconds(), strict=True))
    if model:
        result.extra["batches"] = histogram_delta(before, server.batch_histogram(model))
    return result


def middle(results: list[Result]) -> Result:
    """The round with the median throughput (the upper one of an even count)."""
    return sorted(results, key=lambda r: r.rps)[len(results) // 2]


def measure_rounds(server: Server, scenario: Scenario, connections: int, duration: float, baseline_duration: float,
                   rounds: int, workdir: Path) -> tuple[Result, Result, list[float]]:
    """Baseline and model endpoint measured in turn, `rounds` times: (the model's median round,
    the baseline's median round, each round's ratio). Alternating rounds let a slow spell of a shared
    machine hit both sides, and the median ratio is what the table compares with the target."""
    before = server.batch_histogram(scenario.model)
    bases, results = [], []
    for _ in range(rounds):
        bases.append(measure(server, scenario.baseline, connections, baseline_duration, "baseline", workdir))
        results.append(measure(server, scenario.request, connections, duration, scenario.name, workdir,
                               scenario.model))
    ratios = [r.rps / b.rps if b.rps else 0.0 for r, b in zip(results, bases, strict=True)]
    result, base = middle(results), middle(bases)
    result.extra["batches"] = histogram_delta(before, server.batch_histogram(scenario.model))
    return result, base, ratios


# A heavy round lasts long enough for about this many requests at one connection's pace: at 1
# request/s (the tree detector), a 10-second round holds 10 and one request more or less is 10 %.
HEAVY_ROUND_REQUESTS = 40


def heavy_round_seconds(single_p50_ms: float, least: float) -> float:
    """Seconds per heavy round: at least `least`, enough for HEAVY_ROUND_REQUESTS, at most a minute."""
    return max(least, min(60.0, HEAVY_ROUND_REQUESTS * single_p50_ms / 1000))


def measure_heavy(server: Server, heavy: list[Scenario], args: argparse.Namespace, workdir: Path) -> list[tuple]:
    """Single-request latency, then `rounds` turns of 8 connections on this server (batching on) and
    on a second one with batching off, both loaded the whole time: (scenario, single, on, off, speed-ups)."""
    unbatched_server = Server(args.model_dir, batching=False)
    rows = []
    try:
        for scenario in heavy:
            single = measure(server, scenario.request, 1, args.duration, "1 connection", workdir, scenario.model)
            duration = heavy_round_seconds(single.p50_ms, args.duration)
            on, off = [], []
            for _ in range(args.heavy_rounds):
                on.append(measure(server, scenario.request, 8, duration, "batching on", workdir, scenario.model))
                off.append(measure(unbatched_server, scenario.request, 8, duration, "batching off", workdir))
            speed_ups = [a.rps / max(b.rps, 1e-9) for a, b in zip(on, off, strict=True)]
            rows.append((scenario, single, middle(on), middle(off), speed_ups))
            print(f"{scenario.name}: batching on vs off " + ", ".join(f"{x:.2f}×" for x in speed_ups), flush=True)
    finally:
        unbatched_server.stop()
    return rows


def run(args: argparse.Namespace) -> str:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    workdir = Path(tempfile.mkdtemp(prefix="labnets-wrk-"))
    rows, heavy_rows, memory = [], [], []
    server = Server(args.model_dir, batching=True)
    try:
        models = {m["name"]: m for m in json.loads(server.get("/models"))["data"]}
        chosen = [s for s in scenarios(models) if not args.only or s.name in args.only]
        for scenario in chosen:
            if scenario.model in HEAVY_MODELS:
                continue
            # digits' rounds add up to the long run that shows whether memory grows under load
            duration = args.long_duration / args.rounds if scenario.name == "digits" else args.duration
            rss_before = server.rss_mib()
            result, base, ratios = measure_rounds(server, scenario, args.connections, duration, args.duration,
                                                  args.rounds, workdir)
            rss_after = server.rss_mib()
            rows.append((scenario, result, base, ratios))
            memory.append((scenario.name, duration * args.rounds, rss_before, rss_after))
            print(f"{scenario.name}: {result.rps:.0f} req/s vs baseline {base.rps:.0f}; ratios "
                  + ", ".join(f"{r:.0%}" for r in ratios), flush=True)
        heavy = [s for s in chosen if s.model in HEAVY_MODELS]
        if heavy:
            heavy_rows = measure_heavy(server, heavy, args, workdir)
    finally:
        server.stop()
    shutil.rmtree(workdir, ignore_errors=True)
    return report(rows, heavy_rows, memory, args)


def cpu_cell(result: Result) -> str:
    loop, others = result.extra.get("cpu_us", (0.0, 0.0))
    return f"{loop:.0f} + {others:.0f}"


def report(rows, heavy_rows, memory, args) -> str:
    lines = [
        "# Serving benchmark",
        "",
        f"Machine: {describe_machine()}.",
        "",
        f"Command: `python -m benchmarks.serve --duration {args.duration:g} --long-duration {args.long_duration:g} "
        f"--rounds {args.rounds} --heavy-rounds {args.heavy_rounds} --connections {args.connections}`. One uvicorn "
        "worker, default settings (batching on, `MAX_BATCH_SIZE=32`, `MAX_DELAY_MS=2`, `MAX_BATCHES_IN_FLIGHT=4`, "
        "`EVENT_LOOP_CPU=0`; a model's manifest may set its own batching, listed in `/models`), wrk with one thread "
        "on the same machine. Each model endpoint is "
        "measured in turn with its baseline, a no-model endpoint doing the same HTTP work (the same upload read and "
        "decoded, the same records read and validated, the same query validated) and returning a constant: "
        f"{args.rounds} rounds of baseline then model. The table shows each side's median round and the median of "
        "the rounds' ratios; the last column lists every round's ratio.",
        "",
        f"## Throughput at {args.connections} concurrent connections",
        "",
        "| endpoint | req/s | p50 ms | p99 ms | errors | baseline req/s | baseline p99 ms | ratio | target | "
        "server CPU µs/request: event loop + other threads (baseline) | batch rows: batches | ratio per round |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for scenario, result, base, ratios in rows:
        ratio = float(np.median(ratios))
        target = f"≥ {scenario.target_ratio:.0%}" if scenario.target_ratio else "–"
        verdict = "" if scenario.target_ratio is None else (" ✓" if ratio >= scenario.target_ratio else " ✗")
        lines.append(
            f"| `{scenario.request.method} {scenario.request.path}` | {result.rps:.0f} | {result.p50_ms:.2f} | "
            f"{result.p99_ms:.2f} | {result.errors} | {base.rps:.0f} | {base.p99_ms:.2f} | {ratio:.0%}{verdict} | "
            f"{target} | {cpu_cell(result)} ({cpu_cell(base)}) | {result.extra.get('batches', '–')} | "
            + ", ".join(f"{r:.0%}" for r in ratios) + " |"
        )
    if heavy_rows:
        lines += ["", "## Heavy models: batching on vs off", "",
                  f"Two servers, one with batching on and one off, both loaded throughout; {args.heavy_rounds} rounds of "
                  f"8 connections on each in turn, each round long enough for about {HEAVY_ROUND_REQUESTS} requests at "
                  "the single-request latency (at least --duration). Median rounds, the median speed-up, and every "
                  "round's.",
                  "",
                  "| endpoint | single request p50 ms | 8 conn. batching on req/s | p99 ms | 8 conn. batching off req/s | "
                  "p99 ms | speed-up | speed-up per round |",
                  "|---|---|---|---|---|---|---|---|"]
        for scenario, single, batched, unbatched, speed_ups in heavy_rows:
            lines.append(
                f"| `{scenario.request.path}` | {single.p50_ms:.1f} | {batched.rps:.1f} | {batched.p99_ms:.0f} | "
                f"{unbatched.rps:.1f} | {unbatched.p99_ms:.0f} | {float(np.median(speed_ups)):.2f}× | "
                + ", ".join(f"{x:.2f}×" for x in speed_ups) + " |"
            )
    lines += ["", "## Resident memory of the server", "", "| during | seconds of load | RSS before MiB | RSS after MiB |",
              "|---|---|---|---|"]
    for name, duration, before, after in memory:
        lines.append(f"| {name} load | {duration:g} | {before:.0f} | {after:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="Seconds per measurement (one round of one side).")
    parser.add_argument("--long-duration", type=float, default=60.0,
                        help="Seconds of digits load over all its rounds (the memory run).")
    parser.add_argument("--rounds", type=int, default=3, help="Rounds of baseline then model per endpoint.")
    parser.add_argument("--heavy-rounds", type=int, default=6,
                        help="Rounds of batching on then off per heavy model: one round's ratio moves by "
                             "±15 %% on a shared host, more than batching gains there.")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--only", nargs="*", help="Only these scenarios (digits fashion ecg words imagenet trees).")
    parser.add_argument("--model-dir", type=Path, default=REPO_ROOT / "models")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args(argv)
    text = run(args)
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
