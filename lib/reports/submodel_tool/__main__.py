"""`python -m lib.reports.submodel_tool explain ...` (also `python -m lib.submodels`)."""

import sys

from lib.reports.submodel_tool.cli import main

main(sys.argv[1:])
