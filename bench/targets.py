"""The performance targets of issue 18, judged on one bench run's own figures.

``bench/staging`` and ``bench/webhooks`` end with these lines: each target the run
measured, its figure, and ``met`` or ``NOT MET``; for one not met, the section of
bench/README.md that shows what bounds it and what was tried. A target the run
did not measure (no Quix peer, fewer than 1M rows, another load shape) says which
command measures it. Nothing here is remembered between runs: a verdict is only
as good as the run that printed it (the machines are shared: rerun, and quote
medians).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: Where bench/README.md shows what bounds a target and what was tried: the start of a
#: heading there (tests/unit/test_bench_targets.py checks that each one exists).
STAGING_PROFILE = "What bounds the staging targets, and what was tried"
WEBHOOK_PROFILE = "What bounds the webhook targets, and what was tried"

#: The issue's figures of its day (2026-12-02): the project's pipeline CPU per row with one
#: worker and with two. The target is at most half of them.
ISSUE_PIPELINE_US = {1: 227.0, 2: 205.0}

MILLION = 1_000_000


@dataclass(frozen=True)
class Verdict:
    """One target: what this run measured of it, and whether it is met (None: not measured)."""

    target: str
    measured: str
    met: bool | None
    #: Judged: the bench/README.md section on what bounds it. Not measured: the command that would.
    see: str = ""

    def line(self) -> str:
        if self.met is None:
            return f"  not measured  {self.target}: {self.measured} (run {self.see})"
        if self.met:
            return f"  met           {self.target}: {self.measured}"
        return (
            f"  NOT MET       {self.target}: {self.measured}; what bounds it and what was "
            f'tried: bench/README.md, "{self.see}"'
        )


def report(verdicts: Iterable[Verdict]) -> str:
    """The lines the benches print after their figures."""
    lines = ["targets (issue 18), judged on this run only:"]
    lines += [verdict.line() for verdict in verdicts]
    return "\n".join(lines)


@dataclass(frozen=True)
class StagingFigures:
    """What bench/staging measured, per contender: medians over its runs."""

    #: (kind, processes) → median rows/s; kind is "project", "plain" or "quix".
    rates: dict[tuple[str, int], float]
    #: (kind, processes) → median pipeline CPU µs per row.
    pipeline_us: dict[tuple[str, int], float]
    #: The project's worker counts → median seconds for the run's rows.
    seconds: dict[int, float]
    #: Every project worker's peak RSS over the run, MiB.
    peaks_mib: Sequence[float]
    rows: int


def staging(figures: StagingFigures) -> list[Verdict]:
    """The staging targets: the peers, the CPU per row, 1M rows, the memory."""
    projects = {n: rate for (kind, n), rate in figures.rates.items() if kind == "project"}
    if not projects:
        return []
    best = max(projects, key=projects.__getitem__)
    mine = projects[best]
    who = f"project, {best} worker{'s' * (best > 1)} {mine:,.0f} rows/s"
    verdicts = [
        _against_peer(figures, "quix", 1.0, "≥ the Quix Streams peer's rows/s (must)", mine, who),
        _against_peer(
            figures, "plain", 0.8, "≥ 0.8 times the plain asyncio peer's (goal)", mine, who
        ),
    ]
    workers = min(best, 2)
    ceiling = ISSUE_PIPELINE_US[workers] / 2
    used = figures.pipeline_us[("project", best)]
    verdicts.append(
        Verdict(
            f"pipeline CPU per row at most half the issue's {ISSUE_PIPELINE_US[workers]:.0f} µs "
            f"({workers} worker{'s' * (workers > 1)})",
            f"{used:.0f} µs against {ceiling:.0f} µs",
            used <= ceiling,
            STAGING_PROFILE,
        )
    )
    for target, limit in (
        ("1M rows with two workers in under 5 minutes (the plan)", 300),
        ("1M rows with two workers in under 60 s (goal)", 60),
    ):
        if figures.rows >= MILLION and 2 in figures.seconds:
            seconds = figures.seconds[2] * MILLION / figures.rows
            shown = f"{seconds:.0f} s"
            verdicts.append(Verdict(target, shown, seconds < limit, STAGING_PROFILE))
        else:
            shown = f"this run had {figures.rows:,} rows" + (
                "" if 2 in figures.seconds else ", no two-worker run"
            )
            verdicts.append(
                Verdict(target, shown, None, "bench/staging --rows 1000000 --workers 2")
            )
    if figures.peaks_mib:
        peak = max(figures.peaks_mib)
        shown = f"{peak:.0f} MiB at most over {figures.rows:,} rows"
        target = "peak RSS per worker under 300 MiB through 1M rows"
        if figures.rows >= MILLION:
            verdicts.append(Verdict(target, shown, peak < 300, STAGING_PROFILE))
        else:
            verdicts.append(Verdict(target, shown, None, "bench/staging --rows 1000000"))
    return verdicts


def _against_peer(
    figures: StagingFigures, kind: str, share: float, target: str, mine: float, who: str
) -> Verdict:
    peers = {n: rate for (k, n), rate in figures.rates.items() if k == kind}
    if not peers:
        return Verdict(target, f"no {kind} peer in this run", None, "bench/staging --peers")
    best = max(peers, key=peers.__getitem__)
    ratio = mine / peers[best]
    return Verdict(
        target,
        f"{ratio:.2f} times ({who}; {kind} peer, poller + {best} {peers[best]:,.0f} rows/s)",
        ratio >= share,
        STAGING_PROFILE,
    )


def webhooks(
    *, client: str, rate: float | None, concurrency: int, req_s: float, p50: float, p95: float
) -> list[Verdict]:
    """The webhook target this load shape measures (latencies in seconds), and the others'
    commands. One worker, synchronous answers: bench/webhooks runs nothing else.
    """
    shown = f"{req_s:,.0f} req/s, p50 {p50 * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms"
    lone = rate is None and client == "python" and concurrency == 1
    # (target, whether this run measures it, met, why not, the command that measures it)
    shapes = (
        (
            "≥ 2,000 req/s at p95 ≤ 100 ms (wrk)",
            client == "wrk",
            req_s >= 2000 and p95 <= 0.100,
            "not a wrk run",
            "bench/webhooks --client wrk --requests 40000",
        ),
        (
            "at 200 req/s: p50 ≤ 10 ms and p95 ≤ 25 ms",
            rate == 200,
            p50 <= 0.010 and p95 <= 0.025,
            "not a run at 200 req/s",
            "bench/webhooks --rate 200 --duplicates 0",
        ),
        (
            "a lone webhook answered in ≤ 15 ms (p50)",
            lone,
            p50 <= 0.015,
            "not a lone run",
            "bench/webhooks --requests 300 --concurrency 1 --duplicates 0",
        ),
    )
    return [
        Verdict(target, shown, met, WEBHOOK_PROFILE)
        if measured
        else Verdict(target, why, None, run)
        for target, measured, met, why, run in shapes
    ]
