"""What a bench reports from its interleaved rounds, and when the rounds are too noisy to report it.

One rule for every figure: the reported images/s is the median over rounds, and a reported ratio (``x seed``, share
of the ceiling) is the ratio *of those medians*, so that a reader can check it from the two printed numbers and the
bar chart shows the same thing. The median of the same-round ratios (what the bench reported before; it cancels a
load that slows every backend of one round alike) is kept beside it as ``*_paired``. When the two disagree, or the
rounds spread wide, or a loader-fed training run comes out faster than the in-memory ceiling it cannot beat, the
rounds were too noisy to measure the difference: the row carries ``warnings`` (shown in the table, the chart and the
JSON) instead of passing for a valid figure.
"""
from __future__ import annotations

import statistics
from collections.abc import Sequence

NOISY_SPREAD = 0.5        # (max - min) / median of a row's rounds: beyond it, one round in two differs by a third
NOISY_DISAGREEMENT = 0.10  # |ratio of medians / median of same-round ratios - 1|: rounds disagree on the ratio
CEILING_SLACK = 0.0       # a loader-fed share above 100 % (+ slack) of the in-memory ceiling is noise by definition


def summarize(rounds: Sequence[float]) -> dict:
    """``images_per_s`` (median), ``images_per_s_min``, ``images_per_s_max`` of one row's rounds."""
    return {"images_per_s": statistics.median(rounds), "images_per_s_min": min(rounds),
            "images_per_s_max": max(rounds)}


def ratios(rounds: Sequence[float], reference: Sequence[float]) -> tuple[float, float, list[float]]:
    """(ratio of the medians, median of the same-round ratios, the same-round ratios) of ``rounds`` to
    ``reference`` (rounds interleaved, so round i of each was measured side by side)."""
    same_round = [x / b for x, b in zip(rounds, reference)]
    return statistics.median(rounds) / statistics.median(reference), statistics.median(same_round), same_round


def spread(rounds: Sequence[float]) -> float:
    """(max - min) / median: 0 for identical rounds."""
    return (max(rounds) - min(rounds)) / statistics.median(rounds)


def noise_warnings(rounds: Sequence[float], *, ratio: float | None = None, paired: float | None = None,
                   what: str = "ratio") -> list[str]:
    """Why the rounds of one row are too noisy to report (empty when they are not): a spread beyond
    :data:`NOISY_SPREAD`, or the ratio of medians and the median of same-round ratios (``what``) disagreeing by more
    than :data:`NOISY_DISAGREEMENT`."""
    out = []
    if len(rounds) > 1 and spread(rounds) > NOISY_SPREAD:
        out.append(f"rounds spread {100 * spread(rounds):.0f} % of their median (limit {100 * NOISY_SPREAD:.0f} %)")
    if ratio is not None and paired is not None and abs(ratio / paired - 1) > NOISY_DISAGREEMENT:
        out.append(f"{what} of the medians {ratio:.2f} vs {paired:.2f} as the median of same-round {what}s "
                   f"(limit {100 * NOISY_DISAGREEMENT:.0f} % apart)")
    return out


def ceiling_warning(share: float) -> list[str]:
    """A loader-fed training run faster than the in-memory ceiling: impossible but for noise."""
    if share > 1.0 + CEILING_SLACK:
        return [f"{100 * share:.1f} % of the in-memory ceiling, which a loader-fed run cannot beat: the rounds are "
                "too noisy to show the loader's cost"]
    return []

