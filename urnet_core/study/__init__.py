"""The study: cached pipeline stages (the composition root), the ablation and its tables,
analysis, figures, HTML reports, the notebook set-up and the papermill runner."""
