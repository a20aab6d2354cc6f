"""Reports (`aisle report`): self-contained HTML pages of plots, written under reports/."""
