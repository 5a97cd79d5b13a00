"""language_neurons (Kojima et al., NAACL 2024), as a package of one job per module.

- `data`: the shipped parallel sample and the FLORES+ / PAWS-X loaders;
- `identify`: which language a generated text is in;
- `task`: the task itself, `LanguageNeurons`: neuron scores, selection, forcing, metrics, plots.
"""

from tasks.language_neurons.data import DATA, FLORES, LANGS, load_hub, load_shipped
from tasks.language_neurons.identify import LanguageIdentifier
from tasks.language_neurons.task import (
    LanguageNeurons,
    LanguageNeuronsConfig,
    UnitSpace,
    forcing_edits,
    pool_mlp_acts,
    pool_units,
    score_languages,
    unit_sites,
)

__all__ = [
    "DATA",
    "FLORES",
    "LANGS",
    "LanguageIdentifier",
    "LanguageNeurons",
    "LanguageNeuronsConfig",
    "forcing_edits",
    "load_hub",
    "load_shipped",
    "pool_mlp_acts",
    "pool_units",
    "score_languages",
    "UnitSpace",
    "unit_sites",
]
