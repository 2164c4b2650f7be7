"""Scientific figures (PNG): objects, probes, scan positions, loss curves, comparisons.

All figures are drawn on pyplot-free Agg figures (no window, no global backend
change) and written atomically.
"""

from ptychopinn.figures.images import (
    nice_scale_bar,
    plot_positions,
    plot_probe,
    save_object_figures,
)
from ptychopinn.figures.plots import plot_comparison, plot_loss_curve, plot_spoke_modulation

__all__ = [
    "nice_scale_bar",
    "plot_comparison",
    "plot_loss_curve",
    "plot_positions",
    "plot_probe",
    "plot_spoke_modulation",
    "save_object_figures",
]
