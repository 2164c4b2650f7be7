"""The ``ptychopinn`` command line: argument parsing and error reporting.

Subcommands are thin wrappers over the Python API (`ptychopinn.cli.commands`).
User mistakes (bad files, bad options) print a one-paragraph error and exit 2,
never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

# torch's OpenMP workers spin-wait between parallel regions by default: on a CPU
# shared with other work that made 2 threads 10-20x slower than 1 here. Passive
# waiting must be chosen before torch loads; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ptychopinn import __version__  # noqa: E402

CLI_BACKENDS = ("pytorch", "tensorflow")
"""``--backend``'s choices: `ptychopinn.config.schema.BACKENDS` (kept here so that the
parser is built without importing the configuration's dependencies; a test compares)."""


def _batch_size(text: str) -> int | str:
    """infer's ``--batch-size``: a whole number >= 1, or 'auto'."""
    from ptychopinn.inference.precision import batch_size_from_text

    try:
        return batch_size_from_text(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _train_batch_size(text: str) -> int:
    """train's ``--batch-size``: a whole number >= 1 (training has no 'auto')."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        also = " ('auto' is infer's only)" if text == "auto" else ""
        raise argparse.ArgumentTypeError(
            f"train takes a whole number >= 1 of groups per step{also}; found {text!r}"
        )
    return value


def _positive_minutes(text: str) -> float:
    """A time budget in minutes: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of minutes > 0; found {text!r}")
    return value


def _patch_size(text: str) -> int:
    """``--patch-size``: a whole number of pixels >= 2."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 2:
        raise argparse.ArgumentTypeError(
            f"expected a whole number of pixels >= 2 (the model takes 32, 64, 128 or 256); "
            f"found {text!r}"
        )
    return value


PATCH_SIZE_HELP = (
    "Centre-crop CXI frames to N x N (the model takes N = 32, 64, 128 or 256; e.g. the "
    "100 x 100 frames of a CXI file -> --patch-size 64). Other formats: must equal "
    "their N."
)


#: ``execution.accelerator``'s choices (`ptychopinn.config.schema.ExecutionConfig`).
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")


#: An example of ``--set`` that each command takes (its keys: ``ptychopinn config SECTION``).
SET_EXAMPLES = {
    "train": "model.N=128",
    "infer": "refine_momentum=0",
    "simulate": "poisson_noise=false",
}


def _set_help(command: str) -> str:
    """``--set``'s help for ``command``, with an example of a key that command takes."""
    return (f"Override a config field, e.g. --set {SET_EXAMPLES[command]} (repeatable; the "
            f"keys: `ptychopinn config {command}`).")


def _common(p: argparse.ArgumentParser, *, train: bool) -> None:
    command = "train" if train else "infer"
    p.add_argument("--config", help="YAML/JSON config file (flags override it).")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=_set_help(command),
    )
    p.add_argument("--backend", choices=CLI_BACKENDS,
                   help="'pytorch' (default) or 'tensorflow'.")
    p.add_argument("--accelerator", help="cpu | gpu | auto.")
    if train:
        p.add_argument("--devices", help="Number of devices (or 'auto'); several train "
                                         "with DDP (inference runs on one).")
        p.add_argument("--batch-size", type=_train_batch_size, metavar="N",
                       help="Groups per optimisation step (a whole number; default 16, "
                            "batch_size).")
    else:
        p.add_argument("--batch-size", type=_batch_size, metavar="N",
                       help="Groups per forward pass of the network: a whole number, or "
                            "'auto' (the default).")
    p.add_argument("--seed", type=int,
                   help=("Seed of everything random in training (default 0)."
                         if train else "Seed of the groups drawn with --n-groups (default 0; "
                         "the default cover of the scan draws none)."))
    p.add_argument("-q", "--quiet", action="store_true",
                   help="Only warnings, errors and the few lines of the result (no info "
                        "logs, no progress bar).")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ptychopinn",
        description="Physics-informed neural-network ptychography: simulate, train, reconstruct, "
        "evaluate.",
    )
    parser.add_argument("--version", action="version", version=f"ptychopinn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "demo",
        help="End to end on a built-in simulated scan: simulate -> train "
        "-> reconstruct -> figures and metrics.",
    )
    p.add_argument("--output-dir", default="demo_run",
                   help="Folder it writes (default: %(default)s).")
    p.add_argument("--minutes", type=_positive_minutes, default=None,
                   help="Training time budget in minutes (default: 8, the training "
                        "config's max_time_minutes).")
    p.add_argument("--accelerator", default="cpu", choices=ACCELERATORS,
                   help="Device (default: %(default)s).")
    p.add_argument("--seed", type=int, default=0,
                   help="Seed of the simulated scan and the training (default: %(default)s).")
    p.add_argument("-q", "--quiet", action="store_true")

    p = sub.add_parser("simulate", help="Simulate a scan with a known object (NPZ contract).")
    p.add_argument("output", help="Output NPZ file.")
    p.add_argument("--config", help="YAML/JSON simulation config.")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help=_set_help("simulate"))
    p.add_argument("--N", type=int, dest="N")
    p.add_argument("--object", dest="object_kind", help="textured | lines | grf | image | file")
    p.add_argument("--object-image", help="scikit-image test image name (with --object image, "
                                          "or the default textured: its amplitude picture).")
    p.add_argument("--object-file", help="NPZ (objectGuess) or .npy complex object; implies "
                                         "--object file.")
    p.add_argument("--probe", dest="probe_kind", help="disk | gaussian | zoneplate | file")
    p.add_argument("--probe-file", help="NPZ (probeGuess) or .npy complex probe; implies "
                                        "--probe file.")
    p.add_argument("--pattern", help="raster | fermat | random")
    p.add_argument("--n-positions", type=int)
    p.add_argument("--step", type=float, dest="step_px")
    p.add_argument("--jitter", type=float, dest="jitter_px")
    p.add_argument("--subpixel", choices=("bilinear", "probe_shift"),
                   help="sub-pixel positions: Fourier-shift the probe on the nearest "
                        "whole-pixel window (probe_shift, default) or interpolate the object "
                        "(bilinear)")
    p.add_argument("--photons", type=float, dest="photons_per_pattern")
    p.add_argument("--seed", type=int)
    p.add_argument("-q", "--quiet", action="store_true")

    p = sub.add_parser(
        "inspect", help="Summarise a data file (shapes, counts, positions, overlap)."
    )
    p.add_argument("file")
    p.add_argument("--format", dest="fmt", help="npz | tike | cxi (default: detect).")
    p.add_argument("--patch-size", type=_patch_size, metavar="N", help=PATCH_SIZE_HELP)
    p.add_argument("--json", action="store_true", help="Print JSON.")
    p.add_argument("-q", "--quiet", action="store_true")

    p = sub.add_parser("convert", help="Convert tike NPZ / CXI files to the NPZ contract.")
    p.add_argument("source")
    p.add_argument("destination")
    p.add_argument("--format", dest="fmt", help="npz | tike | cxi (default: detect).")
    p.add_argument("--probe", help="Probe file (NPZ with probeGuess, or .npy) for CXI input.")
    p.add_argument("--patch-size", type=_patch_size, metavar="N", help=PATCH_SIZE_HELP)
    p.add_argument("-q", "--quiet", action="store_true")

    p = sub.add_parser("train", help="Train a model on a scan.")
    p.add_argument("--data", help="Training scan (NPZ contract).")
    p.add_argument("--test-data", help="Held-out scan reconstructed and scored after training.")
    p.add_argument("--output-dir", help="Run directory (default: ptychopinn_run).")
    p.add_argument("--model-type", choices=None, help="pinn | supervised")
    p.add_argument("--architecture", help="unet | cnn")
    p.add_argument("--epochs", type=int)
    p.add_argument("--max-minutes", type=float, help="Training time budget in minutes.")
    p.add_argument("--n-groups", type=int,
                   help="Groups sampled per epoch (n_groups; default: one per pattern).")
    p.add_argument("--gridsize", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--strategy", help="auto | ddp | ddp_spawn")
    p.add_argument("--precision", help="auto (= 32-true) | 32-true | 16-mixed | bf16-mixed")
    p.add_argument("--logger", help="csv | tensorboard | mlflow | none")
    p.add_argument("--init", help="Bundle or run directory to fine-tune from.")
    p.add_argument("--probe-refine-epochs", type=int,
                   help="Refine the scan's probe for K epochs before training (measured "
                        "scans with a rough probe guess; K >= 3).")
    p.add_argument("--probe-refine-positions", action="store_true",
                   help="With --probe-refine-epochs: also correct the scan positions and train "
                        "at them.")
    p.add_argument("--position-keep-linear", action="store_true",
                   help="Keep a global scale/rotation/shear of the position corrections (a "
                        "miscalibrated step size); default: removed.")
    p.add_argument("--resume", action="store_true",
                   help="Continue the training in --output-dir from its checkpoint.")
    p.add_argument("--overwrite", action="store_true",
                   help="Replace the model and checkpoints a training left in --output-dir "
                        "(without --resume or --overwrite, such a folder is refused).")
    p.add_argument("--no-progress", action="store_true", help="Hide the progress bar.")
    _common(p, train=True)

    p = sub.add_parser("infer", help="Reconstruct a scan with a trained model.")
    p.add_argument("--model", help="The run directory written by `ptychopinn train`, or its "
                                    "bundle file (model.ptychopinn.safetensors).")
    p.add_argument("--data", help="Scan to reconstruct.")
    p.add_argument("--output-dir", help="Output directory (default: ptychopinn_recon).")
    p.add_argument("--n-groups", type=int,
                   help="Groups to predict, drawn at random (n_groups; default: a cover "
                        "holding every pattern about once; at most 8 per pattern).")
    p.add_argument("--refine-epochs", type=int, help="Physics refinement epochs (0: off).")
    p.add_argument("--prior-iterations", type=int,
                   help="Physics prior passes (default: as the model was trained, more on "
                        "scans that overlap less where model.prior_coverage_passes is on; a "
                        "value given is not scaled; more is slower and better, e.g. 16).")
    p.add_argument("--prior-extra-iterations", type=int,
                   help="Passes the physics prior adds where its two half-scan estimates agree "
                        "(well-exposed, consistent data; where they agree only marginally, "
                        "only if no converge block is kept; default 2, or 0 for an over-relaxed "
                        "prior such as the featureless recipe's; 0: none, and with "
                        "--prior-converge-passes 0 the model's passes exactly).")
    p.add_argument("--prior-converge-passes", type=int,
                   help="At most this many passes the physics prior adds, 4 at a time, while "
                        "each raises the agreement of its two half-scan estimates (plain "
                        "passes: by more than 0.025, or, after a block so kept, lowers their "
                        "held-out misfit, each half against the other's patterns, by more "
                        "than 10 %%; default 4 "
                        "for an over-relaxed prior such as the featureless recipe's; 16 for "
                        "plain ones, tried only where the halves disagree or agree only "
                        "marginally (within 0.10 of the agreement needed), e.g. objects with "
                        "a strong phase, in updates of 4 patterns without the centre-of-mass "
                        "correction, continuing the halves run with the phase momentum with "
                        "it; 0: none). Training adds the plain "
                        "ones too (--set model.prior_train_converge=false: not).")
    p.add_argument("--prior-phase-momentum", type=float,
                   help="Phase momentum of the physics prior's passes where its two half-scan "
                        "estimates agree, or where a plain converge block is kept (default 0.7, "
                        "or 0 for an over-relaxed prior; 0: off; below 1).")
    p.add_argument("--prior-frc-filter", choices=("on", "off"),
                   help="The physics prior's half-scan FRC filter of its amplitude (default: as "
                        "the model was trained; needs the scan prior).")
    p.add_argument("--prior-step-scale", type=float,
                   help="Over-relaxation of the physics prior's updates (default: as the model "
                        "was trained, model.prior_step_scale; in (0, 4]).")
    p.add_argument("--prior-settle-passes", type=int,
                   help="Plain passes the physics prior's whole-scan estimate ends with "
                        "(default: as the model was trained, model.prior_settle_passes; "
                        "0-64).")
    p.add_argument("--prior-orders", type=int,
                   help="Mini-batch orders whose estimates the physics prior's whole-scan "
                        "estimate averages where it runs without the FRC filter's halves, "
                        "at once on the CPU (default: as the model was trained, "
                        "model.prior_orders: 2 for over-relaxed passes, else 1; 1-8).")
    p.add_argument("--prior-orders-filter", choices=("on", "off"),
                   help="Filter the amplitude of the physics prior's mean of mini-batch "
                        "orders by the orders' Fourier ring correlation (default: as the "
                        "model was trained, model.prior_orders_filter, on; only where 2 or "
                        "more orders run).")
    p.add_argument("--prior-start", choices=("flat", "com", "auto"),
                   help="The phase the physics prior's passes start from (default: as the "
                        "model was trained, model.prior_start): flat; com, the object's "
                        "low-frequency phase from the patterns' centres of mass; or auto, com "
                        "when the probe's phase is nearly flat, else flat.")
    p.add_argument("--prior-com-correction", choices=("on", "off"),
                   help="The physics prior's centre-of-mass phase correction between its "
                        "passes (default: as the model was trained, "
                        "model.prior_com_correction; needs the scan prior).")
    p.add_argument("--phase-sync", choices=("global", "waves", "off"),
                   help="How the groups' global phases are aligned when stitching (default "
                        "global: all at once from their overlap matrix, waves above ~11,000 "
                        "patterns of 64x64; waves: greedy, the default before 2026-12-04; off: "
                        "not aligned).")
    p.add_argument("--position-refine-epochs", type=int,
                   help="Correct the scan positions by K epochs of physics refinement before "
                        "the network (measured scans with position errors; K >= 3).")
    p.add_argument("--refine-probe", action="store_true",
                   help="With --refine-epochs K: also refine the probe (written as "
                        "refined_probe in reconstruction.npz, in the scan's units).")
    p.add_argument("--refine-positions", action="store_true",
                   help="With --refine-epochs K: also correct the scan positions during the "
                        "refinement (refined_positions_px); to correct them before the network "
                        "predicts, use --position-refine-epochs.")
    p.add_argument("--position-keep-linear", action="store_true",
                   help="Keep a global scale/rotation/shear of the position corrections (a "
                        "miscalibrated step size); default: removed.")
    p.add_argument("--precision", choices=("auto", "32-true", "bf16-mixed", "16-mixed"),
                   help="The network's precision (default auto: bf16-mixed on a CPU with AMX-BF16 "
                        "units, else 32-true; the physics stays float32).")
    p.add_argument("--no-figures", action="store_true",
                   help="Write no PNG figures (reconstruction.npz and metrics.json only).")
    _common(p, train=False)

    p = sub.add_parser(
        "evaluate",
        help="Score a reconstruction against a ground-truth object and/or the measured data.",
    )
    p.add_argument("--reconstruction", required=True, help="reconstruction.npz from infer.")
    p.add_argument(
        "--truth",
        help="The scan NPZ the reconstruction was made from, with objectGuess (the true "
        "object): scores the object and, when the file has one, the refined object. Refused "
        "when its positions (xcoords/ycoords) are not the reconstruction's or its object does "
        "not cover the scanned region.",
    )
    p.add_argument(
        "--scan",
        help="The measured scan the reconstruction came from (any readable format): reports "
        "how well the reconstruction explains its counts (R-factor, Poisson deviance vs noise).",
    )
    p.add_argument(
        "--siemens-star",
        action="store_true",
        help="The object is a Siemens star: report how close to its centre the spokes are "
        "resolved (radius and half-period in pixels; no truth needed).",
    )
    p.add_argument(
        "--output-dir",
        help="Where to write metrics.json and the figures (with --truth comparison.png, and "
        "refined_comparison.png for a refined object; with --siemens-star siemens_star.png). "
        "Without it the scores are printed and nothing is written.",
    )
    p.add_argument("--no-ramp", action="store_true", help="Keep the phase ramp (no plane removal).")
    p.add_argument("-q", "--quiet", action="store_true")

    p = sub.add_parser("config", help="Print the default configuration as YAML.")
    p.add_argument("section", nargs="?", default="train",
                   choices=("train", "infer", "simulate", "pretrain"),
                   help="Whose config: train (default), infer, simulate, or pretrain's data "
                        "recipe (its pretrain: mapping).")

    from ptychopinn.cli.commands import add_extra_parsers

    add_extra_parsers(sub)
    return parser


#: The commands that train, and so import Lightning.
TRAINING_COMMANDS = ("train", "pretrain", "demo")
LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")


def route_lightning_logging() -> None:
    """Import Lightning and let its lines through the root's handlers once, at the CLI's level.

    On import Lightning sets its loggers to INFO and gives them console handlers of their
    own, so after the CLI's `logging.basicConfig` each of its lines ("GPU available: ...")
    was printed twice, and ``--quiet`` did not silence them. Here its loggers follow the
    root's level (INFO; WARNING with ``--quiet``) through the root's handlers."""
    try:
        import lightning  # noqa: F401  (its import configures the loggers undone here)
    except ImportError:  # the command reports it where it needs Lightning
        return

    for name in LIGHTNING_LOGGERS:
        lg = logging.getLogger(name)
        for h in list(lg.handlers):
            lg.removeHandler(h)
        lg.setLevel(logging.NOTSET)
        lg.propagate = True


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s"
        if getattr(args, "quiet", False)
        else "%(message)s",
    )
    for noisy in ("matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        # (not for --backend tensorflow, which does not use Lightning: its import costs ~3 s)
        if args.command in TRAINING_COMMANDS and getattr(args, "backend", None) != "tensorflow":
            route_lightning_logging()
        from ptychopinn.cli import commands
        from ptychopinn.errors import PtychoPINNError

        handler = getattr(commands, "cmd_" + args.command.replace("-", "_"))
        try:
            return int(handler(args) or 0)
        except PtychoPINNError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except ValueError as exc:  # pydantic ValidationError and literal checks
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except MemoryError:
            print(f"error: {args.command} ran out of memory (MemoryError); use smaller sizes "
                  "(e.g. fewer positions, a smaller N or --n-groups) or free memory.",
                  file=sys.stderr)
            return 1
    except KeyboardInterrupt as exc:  # Ctrl-C; training.interrupt.TrainingInterrupted (SIGINT/TERM)
        detail = str(exc)
        if args.command == "pretrain":  # its training's words would say --resume
            print("interrupted: the pretraining stopped before its model was saved (no "
                  "bundle written; pretraining.json says 'failed'); run pretrain into the "
                  "same folder again (pretrain has no --resume).", file=sys.stderr)
        elif detail:
            print(f"interrupted: {detail}", file=sys.stderr)
        elif args.command == "train":
            print("interrupted; the training can be continued with --resume.", file=sys.stderr)
        else:
            print("interrupted.", file=sys.stderr)
        return int(getattr(exc, "exit_status", 130))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
