"""Entry point kept for the documented command line `python -m lib.submodels explain ...`.

The tool lives in `lib.reports.submodel_tool` (kernel.py, cli.py); this module only runs its command line.
"""

if __name__ == "__main__":
    import sys

    from lib.core.memory import keep_freed_memory
    from lib.reports.submodel_tool.cli import main

    keep_freed_memory()  # large batched passes reuse freed memory (lib.core.memory)
    main(sys.argv[1:])
