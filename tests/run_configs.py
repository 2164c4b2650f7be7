"""Training configurations the test files share (not a test module: no test is collected
here; imported as ``run_configs``, pytest puts this folder on the import path)."""

from __future__ import annotations

from ptychopinn.config import TrainingConfig


def tiny_training_config(run_dir, **kw) -> TrainingConfig:  # noqa: ANN001
    """A training of seconds on CPU (N=32, a quarter of the filters, no logger, no
    saved reconstruction) into ``run_dir``; ``kw`` override it (a dict merges into its
    section)."""
    base = {
        "output_dir": str(run_dir),
        "nepochs": 2,
        "max_time_minutes": None,
        "batch_size": 16,
        "model": {"N": 32, "n_filters_scale": 0.25},
        "execution": {"logger": "none", "progress_bar": False, "accelerator": "cpu"},
        "save_reconstruction": False,
    }
    for k, v in kw.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            base[k] = {**base[k], **v}
        else:
            base[k] = v
    return TrainingConfig.model_validate(base)
