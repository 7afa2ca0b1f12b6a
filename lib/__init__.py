"""Kernels for the research book: one module per concern (see ../STYLE in shared)."""
