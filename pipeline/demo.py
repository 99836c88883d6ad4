"""The demo: the whole job on the embedded sample, as the commands a user would type, and what to
read and try once it has run."""

from __future__ import annotations

from pathlib import Path

__all__ = ["RUN", "folders", "commands", "closing_lines"]

RUN = "default"  # the run train-detector writes when no --run is given


def folders(out: str | Path) -> tuple[Path, Path]:
    """(data root of the sample, work dir) under the demo's folder."""
    out = Path(out)
    return out / "data", out / "work"


def commands(data: Path, work: Path, epochs: int, workers: int) -> list[list[str]]:
    """The mesodata commands the demo runs, in order, as argument lists."""
    return [
        ["build", "--sources", "celebdf,dfdc,ff++", "--data-root", str(data), "--work", str(work),
         "--frames", "16", "--within-video", "keep", "--workers", str(workers)],
        ["split", "--seed", "0", "--work", str(work), "--workers", str(workers), "--ratios", "60,20,20",
         "--augment", "none"],
        ["train-detector", "--work", str(work), "--run", RUN, "--epochs", str(epochs), "--overwrite"],
    ]


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def closing_lines(data: Path, work: Path, seconds: float) -> list[str]:
    """What the demo ends with: its time, where the report and the plots are, and the next commands
    with this run's real paths. Only files that exist are named."""
    run_dir = work / "detector" / RUN
    lines = [f"demo finished in {_duration(seconds)}"]
    report = run_dir / "report.md"
    if report.is_file():
        lines.append(f"report: {report}")
    plots = sorted(run_dir.glob("*.png"))
    if plots:
        lines.append(f"plots:  {', '.join(str(p) for p in plots)}")
    fakes = data / "Celeb-DF-v2" / "Celeb-synthesis"
    if (run_dir / "metrics.json").is_file():
        lines.append("next:")
        if fakes.is_dir():
            lines.append(f"  mesodata predict {fakes} --work {work}")
        lines.append(f"  mesodata export --work {work}")
    return lines
