"""Entry point kept for the documented command line `python -m lib.prompts keywords --topic-set S --preset P`.

The probes live in `lib.analysis.prompts`; this module only runs its command line.
"""

if __name__ == "__main__":
    import sys

    from lib.analysis.prompts import main

    main(sys.argv[1:])
