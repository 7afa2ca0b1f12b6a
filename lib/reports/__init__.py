"""One package per report (notebooks/NN_<slug>.py -> lib/reports/<slug>/):

    kernel.py   the report's own analysis code (what no other report uses)
    params.py   its typed, validated `Params` with the smoke / cpu / gpu presets and `resolve(preset, **overrides)`
    plots.py    its figures

A report never imports another report's package; what two reports share moves to `lib.analysis`.
"""
