"""What two or more reports use: prompts and keywords, units and activations, interventions, statistics, metrics,
the findings ledger, the notebook session, Shapley estimators, compressors, k-WTA layers, shared plot kinds.

A helper lives here once, with one documented behaviour; it never imports from `lib.reports`.
"""
