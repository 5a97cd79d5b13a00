"""The engine: everything that touches a model.

Loading: `models` (the load and `Model`), `options` (device, dtype, quantisation), `identity`
(which weights a spec names, fingerprints), `gguf_cache` (GGUF headers and the verified
converted-weights cache), `bundled` (the models shipped as packages). The architecture map:
`layout` (pure data). Hooks and sites: `sites`. The requests a task makes: `scoring`,
`generation`, `lens`; interventions: `intervene`; batching by length: `batching`; data
parallelism: `distributed`. Training: `train` (LoRA), `optim` (ADOPT), `sae_training` (SAEs on
streamed activations); SAE files: `sae_io`; tokens a task adds for a block: `added_tokens`;
token helpers: `tokens`; data sets: `hub_data`. Nothing here imports the run or the reports.
"""
