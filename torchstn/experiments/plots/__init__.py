"""Figures of runs (where the transformers read, training curves, ...) and the drawing
helpers they share: below the tasks, which draw their runs' figures with them."""
