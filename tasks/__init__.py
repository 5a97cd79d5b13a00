"""Built-in tasks, one module per task family; each is declared under the entry-point group
`harness.tasks` in pyproject.toml, exactly as a third-party plugin would be."""
