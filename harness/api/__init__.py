"""The plugin contract: what a task is (`Task`, its `Config` of `option`s, `TaskResult`,
`Finding`), how it is found (`register_task`, entry points), and what it is handed
(`RunContext`: every model request a task may make). Plugins import these from `harness`
itself; this package is where they live.
"""
