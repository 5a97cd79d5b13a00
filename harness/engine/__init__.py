"""The engine: everything that touches a model.

Loading (`models`, `bundled`), the architecture map (`layout`, pure data), hooks and sites
(`sites`), the requests a task makes (`scoring`, `generation`, `lens`), interventions
(`intervene`), batching by length (`batching`), data parallelism (`distributed`), training
(`train`, `optim`) and SAE files (`sae_io`). Nothing here imports the run or the reports.
"""
