"""PS-Eval (Minegishi et al., ICLR 2025): do sparse-autoencoder latents separate the senses
of a polysemous word? A word in two contexts should fire the same top latent when its
meaning is the same and different ones when it is not.

`data` holds the pairs (shipped sample, the paper's set, raw WiC), the prompts and target
positions, and the text corpus an SAE is trained on; `task` is the experiment, `PolysemySAE`.
"""

from tasks.polysemy_sae.task import PolysemySAE

__all__ = ["PolysemySAE"]
