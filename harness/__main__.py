"""`python -m harness ...` is the `harness` command, for launchers and notebooks that run modules
(`torchrun -m harness run ...`, `accelerate launch -m harness run ...`)."""

import sys

from harness.run.cli import main

sys.exit(main())
