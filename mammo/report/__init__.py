"""What a run reports: metrics and intervals, subgroups, Grad-CAM, published figures, plots."""
