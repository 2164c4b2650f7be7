"""``ptychopinn pretrain``: parse the options into a recipe and a training config.

Options: ``--probe FILE`` and/or ``--scan SCAN`` (what to pretrain for),
``--n-objects``, ``--max-minutes``, ``--supervised``, ``--accelerator``,
``--seed``; ``--config FILE`` and ``--set KEY=VALUE`` set training fields
(``model.n_filters_scale=0.5``) and, under ``pretrain.``, the data recipe
(``pretrain.photons=1e5``, ``pretrain.dose_range=[0.3,3]``, see
`PretrainConfig`).
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_MAX_MINUTES = 20.0


def split_options(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """(recipe, training overrides) from ``--config`` and ``--set`` (``pretrain.*`` -> recipe)."""
    from ptychopinn.config.io import merge, parse_set, read_mapping
    from ptychopinn.errors import ConfigError

    data: dict[str, Any] = read_mapping(args.config) if getattr(args, "config", None) else {}
    data = merge(data, parse_set(getattr(args, "set", None) or []))
    recipe = data.pop("pretrain", None) or {}
    if not isinstance(recipe, dict):
        raise ConfigError(
            f"pretrain: expected a mapping of recipe keys (e.g. pretrain.photons=1e5); "
            f"found {recipe!r}."
        )
    if getattr(args, "accelerator", None):
        data = merge(data, {"execution": {"accelerator": args.accelerator}})
    if getattr(args, "quiet", False) or getattr(args, "no_progress", False):
        data = merge(data, {"execution": {"progress_bar": False}})
    return recipe, data


def run_pretrain(args: argparse.Namespace) -> int:
    """Handler of ``ptychopinn pretrain``; returns the exit status."""
    from ptychopinn.pretraining.pretrain import RECIPE_FILE, pretrain

    recipe, overrides = split_options(args)
    from_config = overrides.pop("max_time_minutes", DEFAULT_MAX_MINUTES)
    max_minutes = args.max_minutes if args.max_minutes is not None else from_config
    # not converted here: the training config validates it and names the key on an error
    seed = args.seed if args.seed is not None else overrides.pop("seed", None)
    result = pretrain(
        args.probe,
        scan=args.scan,
        out_dir=args.output_dir,
        n_objects=args.n_objects,
        max_minutes=max_minutes,
        supervised=bool(args.supervised),
        seed=seed,
        recipe=recipe,
        overrides=overrides,
    )
    import json

    meta = json.loads((result.run_dir / RECIPE_FILE).read_text())
    last = result.history[-1] if result.history else {}
    print(f"bundle: {result.bundle_path}")
    print(
        f"pretrained on {len(meta['tiles'])} simulated objects ({meta['n_patterns']} patterns, "
        f"N={meta['N']}, step {meta['step_px']:.3g} px, {meta['photons']:.3g} photons x"
        f"{meta['dose_range'][0]:g}..x{meta['dose_range'][1]:g}); "
        f"{meta['epochs_done']} epochs in {meta['fit_seconds']:.0f} s, final train loss "
        f"{last.get('train/loss', float('nan')):.4g}"
    )
    print(f"reconstruct a scan:  ptychopinn infer --model {result.run_dir} --data SCAN.npz")
    print(f"fine-tune on a scan: {finetune_command(result.run_dir)}")
    if meta["model_type"] == "supervised":
        print(
            "note: this model was pretrained with model_type 'supervised'; fine-tuning keeps that "
            "model type, which needs a scan with a true object (see docs/pretraining.md)."
        )
    return 0


def finetune_command(run_dir) -> str:
    """The ``ptychopinn train --init`` line whose model section matches the run's."""
    from ptychopinn.bundle.format import manifest_config, read_bundle
    from ptychopinn.config.schema import ModelConfig

    # the manifest's config alone: rebuilding the model logged "built generator" again
    model = manifest_config(read_bundle(run_dir)[0], run_dir).model
    default = ModelConfig().model_dump(mode="json")
    sets = [
        f"--set model.{k}={v}"
        for k, v in model.model_dump(mode="json").items()
        if default.get(k) != v
    ]
    return " ".join(
        ["ptychopinn train --init", str(run_dir), "--data SCAN.npz", *sets]
    )
