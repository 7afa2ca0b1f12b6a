"""The core: configs and presets, storage, data, our transformer and its TransformerLens twin, training, runs.

Imports flow one way: `lib.reports` -> `lib.analysis` -> `lib.core` -> torch / TransformerLens. Nothing here knows
of an analysis or a report.
"""
