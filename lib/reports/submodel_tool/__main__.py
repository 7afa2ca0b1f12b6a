"""`python -m lib.reports.submodel_tool explain ...` (also `python -m lib.submodels`)."""

import sys

from lib.core.memory import keep_freed_memory
from lib.reports.submodel_tool.cli import main

keep_freed_memory()  # large batched passes reuse freed memory (lib.core.memory)
main(sys.argv[1:])
