"""The code the reports call.

    lib/core/      configs and presets, artifacts (storage only), data, model (+ TransformerLens twin), pretrained,
                   train, runs (get-or-train, sweeps, the torchrun command line), hooks, bench
    lib/analysis/  what two or more reports share (prompts, units, interventions, stats, metrics, findings, session,
                   shapley, compressors, kwta, plotting)
    lib/reports/   one package per report: kernel.py, params.py, plots.py

Imports flow one way: notebooks -> lib.reports -> lib.analysis -> lib.core.
"""
