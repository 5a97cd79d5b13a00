"""Model-agnostic probes: arrays in, metrics out.

Nothing here knows about models, tokenizers or hooks. Tasks collect hidden states as
numpy arrays, hand them to these functions, and get back fitted probes, held-out
predictions and scalar metrics. That keeps the analysis testable on synthetic data
whose right answer is known (see tests/test_probes_*.py).

- `probes.circle`: circular probes (Engels et al. 2024), held-out evaluation, controls,
  and the circle patch / rotation used for interventions.
- `probes.irreducibility`: the separability and epsilon-mixture indices of a 2-D cloud.
"""
