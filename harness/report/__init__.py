"""The reports: leaderboards built from results files (`build`), the findings matrix
(`findings`), per-layer charts (`charts`), the static page (`page`) and publishing (`publish`).

Results files arrive from others, so everything here treats them as untrusted input (paths
through `harness.safepath`, content through `harness.results.validate`). Nothing here imports
the engine or torch: building a leaderboard needs no model.
"""
