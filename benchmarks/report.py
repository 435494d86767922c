"""The runner's table: images/s min / median / max, peak memory, FLOP rate and ratios."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass

import torch

__all__ = ["PEAK_CASE", "Row", "format_table", "peak_flops", "measured_peak"]

#: Dense bf16 tensor-core peaks (FLOP/s) by device-name fragment, for the MFU.
_BF16_PEAK = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12}

#: The case whose FLOP rate is the CPU's reference peak (:mod:`benchmarks.peak`).
PEAK_CASE = "peak:matmul"


def peak_flops() -> float | None:
    """Dense bf16 peak of CUDA device 0, or None when unknown."""
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(0)
    return next((v for k, v in _BF16_PEAK.items() if k in name), None)


def measured_peak(rows: list[Row]) -> float | None:
    """The median FLOP rate of the ``peak:matmul`` row, or None when it did not run."""
    row = next((r for r in rows if r.case == PEAK_CASE), None)
    return row.flop_rate() if row is not None else None


@dataclass
class Row:
    """One (case, implementation, setting) over all rounds."""

    case: str
    impl: str
    setting: str
    seconds: list[float]
    items: int
    peak_mb: float | None
    flops: int | None  # FLOPs of one call (FlopCounterMode), when the case counts them
    error: str | None

    @classmethod
    def from_results(
        cls,
        case: str,
        impl: str,
        setting: str,
        results: list[dict[str, object]],
    ) -> Row:
        """Merge the subprocess results of every round."""
        seconds: list[float] = []
        items, peaks, error = 1, [], None
        flops: int | None = None
        for res in results:
            if "error" in res:
                error = str(res["error"])
                continue
            seconds += [float(s) for s in res["seconds"]]  # type: ignore[attr-defined]
            items = int(res["items"])  # type: ignore[call-overload]
            peaks.append(float(res["maxrss_mb"]))  # type: ignore[arg-type]
            counted = res.get("flops")
            flops = int(counted) if counted else flops  # type: ignore[call-overload]
        peak_mb = max(peaks) if peaks else None
        return cls(case, impl, setting, seconds, items, peak_mb, flops, error)

    def flop_rate(self) -> float | None:
        """FLOP/s at the median call time, or None without a FLOP count."""
        if not self.flops or not self.seconds:
            return None
        return self.flops / statistics.median(self.seconds)

    def rates(self) -> tuple[float, float, float] | None:
        """Images/s (min, median, max) over the timed calls."""
        if not self.seconds:
            return None
        rates = sorted(self.items / s for s in self.seconds)
        return rates[0], statistics.median(rates), rates[-1]

    def as_dict(self) -> dict[str, object]:
        """Plain dict for the JSON file (with the rates)."""
        return dict(asdict(self), images_per_s=self.rates(), flop_rate=self.flop_rate())


def _flop_cell(row: Row, peak: float | None) -> str:
    rate = row.flop_rate()
    if rate is None:
        return ""
    share = f" ({100 * rate / peak:.0f} %)" if peak and row.case != PEAK_CASE else ""
    return f"{rate / 1e9:.1f}{share}"


def _ratio(row: Row, rows: list[Row]) -> str:
    mine = row.rates()
    if mine is None:
        return ""
    if row.case.startswith("load:") and row.setting == "pretrained":
        base = next((r for r in rows if r.case == row.case and r.setting == "random_init"), None)
        ref = base.rates() if base else None
        # time ratio (pretrained / random init) = inverse of the rate ratio
        return f"{ref[1] / mine[1]:.2f}x time" if ref else ""
    if row.impl != "ours":
        return ""
    official = next((r for r in rows if r.case == row.case and r.impl == "official"), None)
    ref = official.rates() if official else None
    return f"{mine[1] / ref[1]:.2f}x" if ref else ""


def format_table(
    rows: list[Row],
    load_before: tuple[float, ...],
    load_after: tuple[float, ...],
    rounds: int,
    peak: float | None = None,
) -> str:
    """The runner's table as Markdown.

    Args:
        rows: Every (case, implementation, setting).
        load_before: ``os.getloadavg()`` before the first round.
        load_after: ``os.getloadavg()`` after the last round.
        rounds: Interleaved rounds run.
        peak: FLOP/s that the GFLOP/s column's share refers to (GPU: the datasheet's bf16
            peak; CPU: the ``peak:matmul`` row's rate), or None.

    Returns:
        The table, a header line with the load averages and the peak, one row per entry.
    """
    lines = [
        f"{rounds} interleaved round(s); load average before "
        f"{'/'.join(f'{x:.2f}' for x in load_before)}, after "
        f"{'/'.join(f'{x:.2f}' for x in load_after)}; {torch.get_num_threads()} threads here"
        + (f"; GFLOP/s shares are of {peak / 1e9:.1f} GFLOP/s" if peak else ""),
        "",
        "| case | impl | setting | images/s min / median / max | s per call (median) | peak MB "
        "| GFLOP/s (share of peak) | ratio |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        rates = row.rates()
        if rates is None:
            lines.append(f"| {row.case} | {row.impl} | {row.setting} | error: {row.error} |||||")
            continue
        memory = f"{row.peak_mb:.0f}" if row.peak_mb is not None else ""
        lines.append(
            f"| {row.case} | {row.impl} | {row.setting} | {rates[0]:.2f} / {rates[1]:.2f} / "
            f"{rates[2]:.2f} | {statistics.median(row.seconds):.3f} | {memory} | "
            f"{_flop_cell(row, peak)} | {_ratio(row, rows)} |"
        )
    return "\n".join(lines)
