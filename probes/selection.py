"""Which layer to report: the same rule for the real probe and every control.

Reporting each control at the layer where the *real* probe did best hands the real probe a
selection advantage the controls never get: on pure noise, the real probe's maximum over
twenty layers beats a control read at that same layer, and every real-minus-control gap
looks positive. The protocol here gives every method its own best layer by one rule (the
highest held-out score, ties to the earliest layer), so a gap means something only when
the real probe's best beats the control's best.
"""

from __future__ import annotations

import math
from typing import Mapping


def best_layer(scores: Mapping[int, float]) -> int:
    """The layer with the highest held-out score; ties go to the earliest layer.

    A NaN score (a fit that failed, a layer with no variance) is never the best: compared
    with `max`, NaN is neither above nor below anything, so it would win or lose by its place
    in the order. Only when every score is NaN is the earliest layer returned.
    """
    if not scores:
        raise ValueError("no layers to choose from")
    finite = [L for L in sorted(scores) if not math.isnan(scores[L])]
    if not finite:
        return min(scores)
    return max(finite, key=lambda L: (scores[L], -L))


def best_layers(scores: Mapping[str, Mapping[int, float]]) -> dict[str, int]:
    """Each method's own best layer by the same rule: {method: layer}."""
    return {method: best_layer(per_layer) for method, per_layer in scores.items()}
