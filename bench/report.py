"""The results: one `Result` per (scenario, server), rendered as a text table and saved as text + JSON.

Long texts (start errors, check failures, notes) go under the table as numbered footnotes, one per
distinct text, so a server that failed to start shows one footnote however many rows it has.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.checks import Scenario
from bench.wrk import Load

BASELINE = "nginx"
COLUMNS = ("scenario", "server", "req/s", "MB/s", "p99 ms", "errors", "ratio/nginx")


@dataclass
class Result:
    scenario: Scenario
    server: str
    load: Load | None = None
    error: str = ""                                  # why there are no numbers (a failure)
    skipped: str = ""                                # why the row did not run (not a failure)
    notes: list[str] = field(default_factory=list)   # observations on a row that ran
    wrk_output: str = ""


def ratio(result: Result, results: list[Result]) -> float | None:
    """This row's req/s over nginx's in the same scenario (None for nginx itself or without both)."""
    if result.server == BASELINE or result.load is None:
        return None
    for other in results:
        if other.server == BASELINE and other.scenario == result.scenario and other.load:
            return result.load.req_per_s / other.load.req_per_s
    return None


def _errors_cell(result: Result, footnote) -> str:
    if result.skipped:
        return result.skipped.split(" (")[0]
    if result.error:
        return f"FAILED [{footnote(f'{result.server}: {result.error}')}]"
    parts = [f"{kind} {n}" for kind, n in result.load.errors.items() if n] or ["0"]
    parts += [f"[{footnote(f'{result.server}: {note}')}]" for note in result.notes]
    return " ".join(parts)


def table_rows(results: list[Result]) -> tuple[list[tuple[str, ...]], list[str]]:
    footnotes: list[str] = []

    def footnote(text: str) -> int:
        if text not in footnotes:
            footnotes.append(text)
        return footnotes.index(text) + 1

    rows = []
    for result in results:
        load, r = result.load, ratio(result, results)
        numbers = (f"{load.req_per_s:,.0f}", f"{load.mb_per_s:,.1f}", f"{load.p99_us / 1000:,.2f}") \
            if load else ("-", "-", "-")
        rows.append((result.scenario.title, result.server, *numbers, _errors_cell(result, footnote),
                     f"{r:.2f}" if r is not None else ""))
    return rows, footnotes


def render(header: list[str], results: list[Result]) -> str:
    rows, footnotes = table_rows(results)
    widths = [max(len(str(row[i])) for row in (COLUMNS, *rows)) for i in range(len(COLUMNS))]
    right = {2, 3, 4, 6}

    def line(cells) -> str:
        return " | ".join(c.rjust(w) if i in right else c.ljust(w)
                          for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    body = [line(COLUMNS), "-+-".join("-" * w for w in widths)] + [line(row) for row in rows]
    notes = [f"[{i}] {text}" for i, text in enumerate(footnotes, 1)]
    return "\n".join(header + [""] + body + ([""] + notes if notes else [])) + "\n"


def to_json(header: list[str], meta: dict, results: list[Result]) -> dict:
    return {"header": header, **meta, "rows": [_row_json(r, results) for r in results]}


def _row_json(result: Result, results: list[Result]) -> dict:
    row = {"scenario": result.scenario.key, "title": result.scenario.title, "path": result.scenario.path,
           "server": result.server, "error": result.error, "skipped": result.skipped,
           "notes": result.notes,
           "ratio_vs_nginx": ratio(result, results)}
    if result.load:
        row.update(req_per_s=result.load.req_per_s, mb_per_s=result.load.mb_per_s,
                   p50_ms=result.load.p50_us / 1000, p99_ms=result.load.p99_us / 1000,
                   max_ms=result.load.max_us / 1000, requests=result.load.requests,
                   errors=result.load.errors, wrk_output=result.wrk_output)
    return row


def save(directory: Path, text: str, data: dict) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    txt, js = directory / f"bench-{stamp}.txt", directory / f"bench-{stamp}.json"
    txt.write_text(text)
    js.write_text(json.dumps(data, indent=2) + "\n")
    return txt, js
