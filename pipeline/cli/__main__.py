"""`python -m mesodata.pipeline.cli ...`: the `mesodata` command."""

from . import main

main()
