"""The run: the command line (`cli`) and the runner that plans tasks, locks and reuses results,
executes them on each model and writes their files (`runner`)."""
