"""The runner's table: images/s min / median / max, peak memory, MFU and ratios."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass

import torch

__all__ = ["Row", "format_table", "peak_flops"]

#: Dense bf16 tensor-core peaks (FLOP/s) by device-name fragment, for the MFU.
_BF16_PEAK = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12}


def peak_flops() -> float | None:
    """Dense bf16 peak of CUDA device 0, or None when unknown."""
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(0)
    return next((v for k, v in _BF16_PEAK.items() if k in name), None)


@dataclass
class Row:
    """One (case, implementation, setting) over all rounds."""

    case: str
    impl: str
    setting: str
    seconds: list[float]
    items: int
    peak_mb: float | None
    mfu: float | None
    error: str | None

    @classmethod
    def from_results(
        cls,
        case: str,
        impl: str,
        setting: str,
        results: list[dict[str, object]],
        peak: float | None,
    ) -> Row:
        """Merge the subprocess results of every round."""
        seconds: list[float] = []
        items, peaks, flops, error = 1, [], None, None
        for res in results:
            if "error" in res:
                error = str(res["error"])
                continue
            seconds += [float(s) for s in res["seconds"]]  # type: ignore[attr-defined]
            items = int(res["items"])  # type: ignore[call-overload]
            peaks.append(float(res["maxrss_mb"]))  # type: ignore[arg-type]
            flops = res.get("flops") or flops
        mfu = None
        if peak and flops and seconds:
            mfu = float(flops) / statistics.median(seconds) / peak  # type: ignore[arg-type]
        return cls(case, impl, setting, seconds, items, max(peaks) if peaks else None, mfu, error)

    def rates(self) -> tuple[float, float, float] | None:
        """Images/s (min, median, max) over the timed calls."""
        if not self.seconds:
            return None
        rates = sorted(self.items / s for s in self.seconds)
        return rates[0], statistics.median(rates), rates[-1]

    def as_dict(self) -> dict[str, object]:
        """Plain dict for the JSON file (with the rates)."""
        return dict(asdict(self), images_per_s=self.rates())


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
    rows: list[Row], load_before: tuple[float, ...], load_after: tuple[float, ...], rounds: int
) -> str:
    """The runner's table as Markdown.

    Args:
        rows: Every (case, implementation, setting).
        load_before: ``os.getloadavg()`` before the first round.
        load_after: ``os.getloadavg()`` after the last round.
        rounds: Interleaved rounds run.

    Returns:
        The table, a header line with the load averages, one row per entry.
    """
    lines = [
        f"{rounds} interleaved round(s); load average before "
        f"{'/'.join(f'{x:.2f}' for x in load_before)}, after "
        f"{'/'.join(f'{x:.2f}' for x in load_after)}; {torch.get_num_threads()} threads here",
        "",
        "| case | impl | setting | images/s min / median / max | s per call (median) | peak MB "
        "| MFU | ratio |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        rates = row.rates()
        if rates is None:
            lines.append(f"| {row.case} | {row.impl} | {row.setting} | error: {row.error} |||||")
            continue
        mfu = f"{100 * row.mfu:.1f} %" if row.mfu is not None else ""
        peak = f"{row.peak_mb:.0f}" if row.peak_mb is not None else ""
        lines.append(
            f"| {row.case} | {row.impl} | {row.setting} | {rates[0]:.2f} / {rates[1]:.2f} / "
            f"{rates[2]:.2f} | {statistics.median(row.seconds):.3f} | {peak} | {mfu} | "
            f"{_ratio(row, rows)} |"
        )
    return "\n".join(lines)
