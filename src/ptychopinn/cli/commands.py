"""Handlers of the CLI subcommands: build a config, call the API, report."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from ptychopinn.atomic import check_output_dir, check_output_file

log = logging.getLogger("ptychopinn")


def add_extra_parsers(sub) -> None:
    """Subcommands contributed by optional parts (pretraining)."""
    p = sub.add_parser("pretrain", help="Pretrain a model for a probe on simulated objects.")
    p.add_argument("--probe", help="Probe file (NPZ with probeGuess, or .npy).")
    p.add_argument("--scan", help="Scan whose probe and geometry to use.")
    p.add_argument("--output-dir", required=True,
                   help="The run folder: new, or one without a model bundle (a folder that "
                        "holds one is refused, not overwritten).")
    p.add_argument("--n-objects", type=int, default=None, help="Simulated objects.")
    p.add_argument("--max-minutes", type=float, default=None)
    p.add_argument("--supervised", action="store_true", help="Train on the known objects.")
    p.add_argument("--config", help="YAML/JSON training config.")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="Override a training field, e.g. --set model.n_filters_scale=0.5 (the "
                        "keys: `ptychopinn config train`), or, under pretrain., the data "
                        "recipe, e.g. --set pretrain.photons=1e5 (`ptychopinn config "
                        "pretrain`); repeatable.")
    p.add_argument("--accelerator")
    p.add_argument("--seed", type=int)
    p.add_argument("--no-progress", action="store_true", help="Hide the progress bar.")
    p.add_argument("-q", "--quiet", action="store_true")


def _put(d: dict, dotted: str, value: Any) -> None:
    if value is None:
        return
    node = d
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def _devices(v: str | None):
    if v is None or v == "auto":
        return v
    try:
        return int(v)
    except ValueError:
        from ptychopinn.errors import ConfigError

        raise ConfigError(f"--devices must be an integer or 'auto'; found {v!r}.") from None


def section_keys() -> dict[str, set[str]]:
    """The top-level keys of each ``ptychopinn config SECTION`` (train, infer, simulate)."""
    from ptychopinn.config.schema import InferenceConfig, TrainingConfig
    from ptychopinn.simulation import SimulationConfig

    return {name: set(cls.model_fields) for name, cls in
            (("train", TrainingConfig), ("infer", InferenceConfig),
             ("simulate", SimulationConfig))}


def check_config_section(data: dict, where: str, command: str) -> None:
    """ConfigError in one line when the ``--config`` file ``where`` (read as ``data``) is
    another command's config (``ptychopinn config train`` given to infer), instead of one
    line per key the command does not know. ``pretrain`` takes train's keys and its
    ``pretrain`` recipe."""
    from ptychopinn.config.io import section_mismatch
    from ptychopinn.errors import ConfigError

    sections = section_keys()
    takes = None
    if command == "pretrain":
        own = sections.pop("train") | {"pretrain"}
        takes = ("the keys of `ptychopinn config train` and, under `pretrain:`, those of "
                 "`ptychopinn config pretrain`")
    else:
        own = sections.pop(command)
    msg = section_mismatch(data, where, command, own, sections, takes)
    if msg:
        raise ConfigError(msg)


def _resolve(cls, args, flag_map: dict[str, Any]):
    from ptychopinn.config.io import (
        CONFIG_SECTIONS,
        build,
        merge_overrides,
        parse_set,
        read_mapping,
    )

    data: dict = read_mapping(args.config) if getattr(args, "config", None) else {}
    command = CONFIG_SECTIONS.get(cls.__name__)
    if data and command is not None:
        check_config_section(data, args.config, command)
    flags: dict = {}
    for key, value in flag_map.items():
        _put(flags, key, value)
    data = merge_overrides(data, flags)
    data = merge_overrides(data, parse_set(getattr(args, "set", []) or []))
    if "backend" in data:
        from ptychopinn.backends import validate_backend

        validate_backend(data["backend"])
    return build(cls, data, where=getattr(args, "config", None) or "options")


# ----------------------------------------------------------------- simulate
def cmd_simulate(args: argparse.Namespace) -> int:
    from ptychopinn.data.inspect import format_summary, summarize
    from ptychopinn.simulation import SimulationConfig, simulate_to_file

    flags = {
        k: getattr(args, k)
        for k in (
            "N",
            "object_kind",
            "object_image",
            "object_file",
            "probe_kind",
            "probe_file",
            "pattern",
            "n_positions",
            "step_px",
            "jitter_px",
            "subpixel",
            "photons_per_pattern",
            "seed",
        )
    }
    cfg = _resolve(SimulationConfig, args, flags)
    check_output_file(args.output, "simulate OUTPUT", example="scan.npz")
    scan = simulate_to_file(cfg, args.output)  # it logs "wrote OUTPUT"
    if not args.quiet:
        print(format_summary(summarize(scan)))
    return 0


# ---------------------------------------------------------- inspect/convert
def cmd_inspect(args: argparse.Namespace) -> int:
    from ptychopinn.data.inspect import format_summary, summarize
    from ptychopinn.data.readers import load_scan

    scan = load_scan(args.file, fmt=args.fmt, patch_size=getattr(args, "patch_size", None),
                     check_centring=False)  # in the summary
    summary = summarize(scan)
    print(json.dumps(summary, indent=1, default=str) if args.json else format_summary(summary))
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from ptychopinn.data.convert import convert

    kw: dict = {"probe": args.probe} if args.probe else {}
    if getattr(args, "patch_size", None) is not None:
        kw["patch_size"] = args.patch_size
    check_output_file(args.destination, "convert DESTINATION", example="scan.npz")
    convert(args.source, args.destination, fmt=args.fmt, **kw)  # it logs what it wrote
    return 0


# -------------------------------------------------------------------- train
def train_config_from_args(args: argparse.Namespace):
    from ptychopinn.config.schema import TrainingConfig

    flags = {
        "train_data_file": args.data,
        "test_data_file": args.test_data,
        "output_dir": args.output_dir,
        "backend": args.backend,
        "model.model_type": args.model_type,
        "model.architecture": args.architecture,
        "model.gridsize": args.gridsize,
        "nepochs": args.epochs,
        "max_time_minutes": args.max_minutes,
        "batch_size": args.batch_size,
        "n_groups": args.n_groups,
        "learning_rate": args.lr,
        "seed": args.seed,
        "init_from": args.init,
        "probe_refine_epochs": args.probe_refine_epochs,
        "probe_refine_positions": True if args.probe_refine_positions else None,
        "position_keep_linear": True if args.position_keep_linear else None,
        "execution.accelerator": args.accelerator,
        "execution.devices": _devices(args.devices),
        "execution.strategy": args.strategy,
        "execution.precision": args.precision,
        "execution.logger": args.logger,
        "execution.progress_bar": False if args.no_progress or args.quiet else None,
    }
    return _resolve(TrainingConfig, args, flags)


def _print_metrics(title: str, metrics: dict | None) -> None:
    if not metrics:
        return
    m = metrics.get("reconstruction", metrics)
    keys = ("amp_ssim", "phase_ssim", "amp_psnr", "phase_psnr", "complex_nrmse")
    vals = ", ".join(f"{k}={m[k]:.3f}" for k in keys if isinstance(m.get(k), (int, float)))
    if vals:
        print(f"{title}: {vals}")


def _print_data_consistency(metrics: dict | None) -> None:
    """One line per object of ``metrics['data_consistency']`` (see metrics.consistency)."""
    for name, d in ((metrics or {}).get("data_consistency") or {}).items():
        counts = d["counts_are_integers"]
        fit = (f"{d['deviance_ratio']:.3g} x the photon-noise floor" if counts
               else "not photon counts: no noise floor")
        print(f"{name} vs the data ({d['n_patterns']} patterns): R-factor="
              f"{d['amplitude_r_factor']:.4g}, Poisson deviance {d['poisson_deviance']:.4g} "
              f"per pixel = {fit}")


def early_stop_note(epochs_done: int, cfg) -> str | None:  # noqa: ANN001 (TrainingConfig)
    """A line saying why training ended before ``cfg.nepochs`` (None when it did not):
    the time limit (a slower machine trains fewer epochs in the same minutes) or
    early stopping."""
    if epochs_done >= cfg.nepochs:
        return None
    why = []
    if cfg.max_time_minutes is not None:
        why.append(f"the time limit (max_time_minutes={cfg.max_time_minutes:g}; raise it with "
                   "--max-minutes to train every epoch)")
    if cfg.early_stopping_patience is not None:
        why.append(f"early stopping (patience {cfg.early_stopping_patience})")
    reason = " or ".join(why) if why else "an interruption"
    return f"note: training ended after {epochs_done} of {cfg.nepochs} epochs, by {reason}."


def _remove_new_run_dir(run_dir: Path) -> None:
    """Remove the run folder this command created if the training stopped on a user error
    before saving a checkpoint or a bundle (it then holds nothing to resume or keep)."""
    import shutil

    if not run_dir.is_dir():
        return
    if any(run_dir.glob("checkpoints/*")) or any(run_dir.glob("*.safetensors")):
        return
    shutil.rmtree(run_dir, ignore_errors=True)


def cmd_train(args: argparse.Namespace) -> int:
    from ptychopinn.api import train
    from ptychopinn.errors import PtychoPINNError

    cfg = train_config_from_args(args)
    # the runner checks the data, options, --resume checkpoint and --init bundle before it
    # makes the run folder; a folder it made for a run that failed later is removed
    run_dir = check_output_dir(cfg.output_dir, "--output-dir (the run folder)")
    existed = run_dir.exists()
    try:
        result = train(cfg, resume=args.resume, overwrite=args.overwrite)
    except (PtychoPINNError, ValueError):
        if not existed:
            _remove_new_run_dir(run_dir)
        raise
    print(f"bundle: {result.bundle_path}")
    if result.history:
        last = result.history[-1]
        print(
            f"epochs: {last['epoch'] + 1}, "
            f"final train loss {last.get('train/loss', float('nan')):.4g}"
        )
        note = early_stop_note(last["epoch"] + 1, cfg)
        if note:
            print(note)
    _print_metrics("training-scan reconstruction vs truth", result.metrics)
    _print_metrics("test-scan reconstruction vs truth", result.test_metrics)
    return 0


# -------------------------------------------------------------------- infer
def infer_config_from_args(args: argparse.Namespace):
    """The `InferenceConfig` of ``ptychopinn infer``'s arguments (over ``--config``)."""
    from ptychopinn.config.schema import InferenceConfig

    flags = {
        "model_path": args.model,
        "data_file": args.data,
        "output_dir": args.output_dir,
        "backend": args.backend,
        "n_groups": args.n_groups,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "refine_epochs": args.refine_epochs,
        "position_refine_epochs": args.position_refine_epochs,
        "prior_iterations": args.prior_iterations,
        "prior_extra_iterations": args.prior_extra_iterations,
        "prior_phase_momentum": args.prior_phase_momentum,
        "prior_converge_passes": args.prior_converge_passes,
        "prior_frc_filter": None if args.prior_frc_filter is None else args.prior_frc_filter == "on",
        "prior_start": args.prior_start,
        "prior_step_scale": args.prior_step_scale,
        "prior_settle_passes": args.prior_settle_passes,
        "prior_orders": args.prior_orders,
        "prior_orders_filter": (None if args.prior_orders_filter is None
                                else args.prior_orders_filter == "on"),
        "prior_com_correction": (None if args.prior_com_correction is None
                                 else args.prior_com_correction == "on"),
        "phase_sync": None if args.phase_sync is None else args.phase_sync != "off",
        "phase_sync_method": args.phase_sync if args.phase_sync in ("global", "waves") else None,
        "refine_probe": True if args.refine_probe else None,
        "refine_positions": True if args.refine_positions else None,
        "position_keep_linear": True if args.position_keep_linear else None,
        "figures": False if args.no_figures else None,
        "execution.accelerator": args.accelerator,
        "execution.precision": args.precision,
        # -q: only warnings and errors, so no refinement progress bar either
        "execution.progress_bar": False if args.quiet else None,
    }
    return _resolve(InferenceConfig, args, flags)


def check_refine_options(cfg) -> None:  # noqa: ANN001 (InferenceConfig)
    """ConfigError when ``refine_probe`` / ``refine_positions`` are on but the refinement
    they belong to is off (``refine_epochs`` 0, after ``--config`` and ``--set``): they
    would otherwise be ignored without a word."""
    from ptychopinn.errors import ConfigError

    given = [flag for flag, on in (("--refine-probe (refine_probe)", cfg.refine_probe),
                                   ("--refine-positions (refine_positions)",
                                    cfg.refine_positions)) if on]
    if not given or cfg.refine_epochs > 0:
        return
    msg = (f"{' and '.join(given)} act during the physics refinement after inference, which "
           f"is off: expected --refine-epochs K with K > 0 (e.g. --refine-epochs 40); found "
           f"refine_epochs {cfg.refine_epochs}. Add --refine-epochs, or drop "
           f"{'it' if len(given) == 1 else 'them'}.")
    if cfg.refine_positions:
        msg += (" To correct the positions before the network predicts instead, use "
                "--position-refine-epochs K (K >= 3).")
    raise ConfigError(msg)


def cmd_infer(args: argparse.Namespace) -> int:
    from ptychopinn.api import reconstruct
    from ptychopinn.bundle.format import resolve_bundle_path
    from ptychopinn.data.readers import load_scan
    from ptychopinn.errors import BundleError, ConfigError
    from ptychopinn.inference.reconstruct import check_outputs_spare, write_outputs

    cfg = infer_config_from_args(args)
    check_refine_options(cfg)
    if cfg.data_file is None:
        raise ConfigError("infer needs --data SCAN.npz (or data_file in --config).")
    check_output_dir(cfg.output_dir, "--output-dir")
    check_outputs_spare(cfg.output_dir, cfg.data_file)  # before any work
    if cfg.model_path is None:
        raise ConfigError("infer needs --model RUN (a run folder or bundle file; or "
                          "model_path in --config).")
    try:  # a missing model is said before the scan is read
        resolve_bundle_path(cfg.model_path)
    except BundleError as exc:
        raise BundleError(f"--model {exc}") from None
    scan = load_scan(cfg.data_file)
    t0 = time.perf_counter()
    recon = reconstruct(cfg.model_path, scan, cfg)
    dt = time.perf_counter() - t0
    files = write_outputs(recon, cfg.output_dir, scan=scan, figures=cfg.figures,
                          data_consistency_patterns=cfg.data_consistency_patterns)
    print(
        f"reconstructed {scan.n_patterns} patterns in {dt:.2f} s "
        f"({recon.backend}, network in {recon.network_dtype}"
        + ("" if recon.network_batch_size is None
           else f" on {recon.network_batch_size} groups at a time")
        + ("" if recon.prior_passes is None else f", {recon.prior_passes} prior passes")
        + ("" if not recon.prior_phase_momentum
           else f" with phase momentum {recon.prior_phase_momentum:g}")
        + ("" if recon.prior_step_scale in (None, 1.0)
           else f", prior step scale {recon.prior_step_scale:g}")
        + ("" if not recon.prior_object_momentum
           else f" with object momentum {recon.prior_object_momentum:g}")
        + ("" if not recon.prior_settle_passes
           else f" then {recon.prior_settle_passes} plain passes")
        + ("" if recon.prior_agreement is None
           else f", half-scan agreement {recon.prior_agreement:.2f}")
        + ("" if recon.prior_frc_filter is not False or recon.prior_step_scale in (None, 1.0)
           else ", whole scan only (no FRC halves)")
        + ("" if (recon.prior_orders or 1) == 1
           else f", mean of {recon.prior_orders} batch orders"
           + ("" if not recon.prior_orders_filter else
              f" FRC-filtered (agreement {recon.prior_orders_agreement:.2f})"))
        + ("" if recon.stitch_weight != "uniform" else ", uniform stitching")
        + f", phase sync {recon.phase_sync}); wrote {files['reconstruction']}"
    )
    info = recon.refinement_info
    if info.get("step_scale", 1.0) < 1.0:
        print(f"refinement: photon-sparse data ({info['counts_per_photon']:.2f} counts per "
              f"photon): object step x {info['step_scale']:.2f}, no momentum "
              "(--set refine_sparse_counts=false: off)")
    _print_metrics("reconstruction vs truth", recon.metrics)
    if recon.metrics and "refined" in recon.metrics:
        _print_metrics("refined vs truth", recon.metrics["refined"])
    _print_data_consistency(recon.metrics)
    return 0


# ----------------------------------------------------------------- evaluate
def cmd_evaluate(args: argparse.Namespace) -> int:
    from ptychopinn.errors import ConfigError
    from ptychopinn.metrics import (
        data_consistency_files,
        evaluate_reconstruction_files,
        write_metrics_json,
    )

    siemens = getattr(args, "siemens_star", False)
    if not args.truth and not args.scan and not siemens:
        raise ConfigError(
            "ptychopinn evaluate: give --truth SCAN.npz (a file with the true object, "
            "objectGuess), --scan SCAN (the measured scan, for data consistency) and/or "
            "--siemens-star (the spokes' resolution); found none of them."
        )
    if args.output_dir:  # a file in the way: an error before any work
        check_output_dir(args.output_dir, "--output-dir")
    metrics: dict = {}
    aligned: dict = {}  # name -> (recon crop, truth crop) for the comparison figures
    if args.truth:
        # the network's object and, when the file has one, the refined object: the layout
        # of infer's metrics.json ("reconstruction", "refined")
        scored = evaluate_reconstruction_files(
            args.reconstruction, args.truth, remove_ramp=not args.no_ramp,
            return_aligned=bool(args.output_dir),
        )
        for name, got in scored.items():
            if isinstance(got, tuple):
                metrics[name], rc, tc = got
                aligned[name] = (rc, tc)
            else:
                metrics[name] = got
    if args.scan:
        from ptychopinn.inference.reconstruct import poor_fit_warning

        metrics["data_consistency"] = data_consistency_files(args.reconstruction, args.scan)
        if warning := poor_fit_warning(metrics["data_consistency"]):  # as infer says it
            log.warning("%s: %s", args.reconstruction, warning)
    spokes: dict = {}
    if siemens:
        from ptychopinn.metrics.siemens import siemens_star_files

        metrics["siemens_star"], spokes = siemens_star_files(args.reconstruction)
    if args.output_dir:
        out = Path(args.output_dir)
        path = write_metrics_json(metrics, out / "metrics.json")
        print(f"wrote {path}")
        if aligned:
            from ptychopinn.figures import plot_comparison

            for name, (rc, tc) in aligned.items():  # (save_figure logs "wrote PATH")
                fig = "comparison.png" if name == "reconstruction" else f"{name}_comparison.png"
                plot_comparison(tc, rc, metrics[name], out / fig)
        if spokes:
            from ptychopinn.figures import plot_spoke_modulation

            plot_spoke_modulation(spokes, out / "siemens_star.png")
    else:
        def brief(d: dict) -> dict:  # the FRC curves are long: in metrics.json only
            return {k: brief(v) if isinstance(v, dict) else v for k, v in d.items() if k != "frc"}

        print(json.dumps(brief(metrics), indent=1))
        if args.truth or spokes:
            print("(no files written: --output-dir DIR writes metrics.json and the figures)")
    if args.truth:
        _print_metrics("reconstruction vs truth", metrics["reconstruction"])
        if "refined" in metrics:
            _print_metrics("refined vs truth", metrics["refined"])
    _print_data_consistency(metrics)
    for name, r in spokes.items():
        print(f"Siemens star ({name}): spokes resolved to a radius of {r.resolved_radius_px:.1f} "
              f"px (finest half-period {r.half_period_px:.2f} px; {r.n_spokes} spoke periods, "
              f"centre at row {r.center[0]:.1f}, column {r.center[1]:.1f} of the scanned region)")
    return 0


# ------------------------------------------------------------------- config
def cmd_config(args: argparse.Namespace) -> int:
    import yaml

    from ptychopinn.config.schema import InferenceConfig, TrainingConfig

    if args.section == "pretrain":
        from ptychopinn.pretraining.dataset import PretrainConfig

        print("# The data recipe of `ptychopinn pretrain` (--set pretrain.KEY=VALUE, or this\n"
              "# mapping in its --config file); its training keys are `ptychopinn config train`'s.\n"
              "# pretrain.pattern (not listed: a value given overrides the choice by --scan):\n"
              "# 'mixed' by default, 'scan' (windows of the scan's own positions) with --scan.")
        recipe = PretrainConfig().model_dump(mode="json")
        recipe.pop("pattern")
        print(yaml.safe_dump({"pretrain": recipe}, sort_keys=False), end="")
        return 0
    if args.section == "simulate":
        from ptychopinn.simulation import SimulationConfig

        cfg = SimulationConfig()
    elif args.section == "infer":
        # a backend written in the file is a choice: left out, reconstruct follows the bundle's
        data = InferenceConfig().model_dump(mode="json")
        data.pop("backend")
        print("# backend (not listed): the bundle's own unless given (pytorch | tensorflow).")
        print(yaml.safe_dump(data, sort_keys=False), end="")
        return 0
    else:
        cfg = TrainingConfig()
    print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), end="")
    return 0


# --------------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    from ptychopinn.cli.demo import run_demo

    return run_demo(
        Path(args.output_dir), minutes=args.minutes, accelerator=args.accelerator, seed=args.seed
    )


def cmd_pretrain(args: argparse.Namespace) -> int:
    from ptychopinn.config.io import read_mapping
    from ptychopinn.pretraining.cli import run_pretrain

    if args.config:
        check_config_section(read_mapping(args.config), args.config, "pretrain")
    check_output_dir(args.output_dir, "--output-dir (the run folder)")
    return run_pretrain(args)
