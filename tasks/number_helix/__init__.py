"""number_helix (Kantamneni & Tegmark 2025): numbers as helices, and addition, in the residual stream.

`task` is the experiment: accuracy, the helix fits per layer, patching with fits and the swap.
"""

from tasks.number_helix.task import NumberHelix

__all__ = ["NumberHelix"]
