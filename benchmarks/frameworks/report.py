"""Turns measurements into the results section of docs/frameworks.md: the table, the machine, the versions."""

from __future__ import annotations

import ast
import os
import platform
from pathlib import Path
from typing import Any

from benchmarks.frameworks import IMPLEMENTATIONS
from benchmarks.machine import cpu_model

BEGIN, END = "<!-- results:frameworks -->", "<!-- /results:frameworks -->"
PACKAGE_DIR = Path(__file__).resolve().parent


def lines_of_code(path: Path) -> int:
    """Non-blank lines that are neither comments nor the module docstring."""
    source = path.read_text()
    tree = ast.parse(source)
    skip: set[int] = set()
    if ast.get_docstring(tree) is not None:
        docstring = tree.body[0]
        skip = set(range(docstring.lineno, docstring.end_lineno + 1))
    return sum(
        1 for number, line in enumerate(source.splitlines(), start=1)
        if number not in skip and line.strip() and not line.strip().startswith("#")
    )


def machine() -> str:
    return (f"{cpu_model()}, {os.cpu_count()} cores, no GPU; {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}")


def load_note(results: dict[str, dict[str, Any]]) -> str:
    """Whether other jobs shared the CPU, judged by the 1-minute load average each run ended with."""
    loads = [r["load_average"] for r in results.values() if "load_average" in r]
    if not loads:
        return ""
    cores = os.cpu_count() or 1
    shared = max(loads) > cores + 1  # the measured process alone keeps the cores busy
    note = f"Load average at the end of each run: {min(loads):.1f} to {max(loads):.1f} on {cores} cores"
    return note + (": other jobs shared the CPU, so the timings are noisy." if shared else ".")


def row(name: str, result: dict[str, Any]) -> str:
    impl = IMPLEMENTATIONS[name]
    loc = lines_of_code(PACKAGE_DIR / f"{impl.module}.py")
    if "skipped" in result:
        return f"| {impl.title} | skipped: {result['skipped']} | | | | | | | {loc} | |"
    return (f"| {impl.title} | {result['test_accuracy']:.4f} | {result['time_per_epoch_s']:.1f} | "
            f"{result['first_step_s']:.2f} | {result['import_s']:.1f} | {result['peak_rss_mib']:.0f} | "
            f"{result['latency_1_ms']:.2f} | {result['latency_256_ms']:.2f} | {loc} | "
            f"{', '.join(sorted(result['versions']))} |")


def render(results: dict[str, dict[str, Any]], epochs: int, command: str) -> str:
    lines = [
        f"Measured with `{command}`: {epochs} epochs each, batch 128, the same initial weights and batch order.",
        "",
        "| Implementation | Test accuracy | Time / epoch (s) | Time to first step (s) | Import (s) | "
        "Peak RSS (MiB) | Latency, 1 image (ms) | Latency, 256 images (ms) | Lines of code | Frameworks loaded |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    lines += [row(name, results[name]) for name in IMPLEMENTATIONS if name in results]
    versions: dict[str, str] = {}
    for result in results.values():
        versions.update(result.get("versions", {}))
    lines += [
        "",
        f"Machine: {machine()}. {load_note(results)}",
        "Versions: " + ", ".join(f"{name} {version}" for name, version in sorted(versions.items())) + ".",
    ]
    return "\n".join(lines)


def write_into(doc: Path, section: str) -> None:
    """Replace what stands between the two markers, leaving the rest of the document alone."""
    text = doc.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{BEGIN}\n{section}\n{END}{tail}")
