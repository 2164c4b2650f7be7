"""Quality versus training time of the self-supervised PINN on the default scan.

Simulates the default scan of `ptychopinn simulate` (N=64, 625 positions,
1e6 photons, textured object), trains with the defaults of `ptychopinn train`
(only the budget changes), and every few minutes stitches the current model's
reconstruction and scores it against the truth (amplitude/phase SSIM after
registration, global-phase and phase-plane removal).

``--ptychi`` first reconstructs the same scan with pty-chi LSQML (100 epochs, its
own interpreter, see `bench_ptychi.py`) and reports after how many minutes of
training the network's inference reaches LSQML-100's amplitude SSIM to within
0.05, and reaches it, against LSQML-100's seconds: the time-to-reconstruction
of self-supervised training from scratch, side by side with the iterative
engine.

Usage::

    python benchmarks/bench_training_curve.py --minutes 10 [--architecture cnn] [--ptychi] [--record]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI does, before torch loads

import lightning as L  # noqa: E402
import torch  # noqa: E402

from ptychopinn.config import TrainingConfig
from ptychopinn.inference.reconstruct import reconstruct_pytorch
from ptychopinn.metrics import evaluate
from ptychopinn.simulation import SimulationConfig, simulate_scan
from ptychopinn.training.runner import train_pytorch


class _Probe:
    """Stand-in for a LoadedModel around the live training module."""

    def __init__(self, module, cfg):
        self.model = module.model
        self.config = cfg
        self.path = Path("<training>")
        self.backend = "pytorch"


class EvalCallback(L.Callback):
    def __init__(self, scan, cfg, every_min: list[float]):
        self.scan, self.cfg, self.marks = scan, cfg, sorted(every_min)
        self.rows: list[dict] = []
        self.t0 = None
        self.eval_time = 0.0

    def on_train_start(self, trainer, pl_module):
        self.t0 = time.monotonic()

    def _evaluate(self, trainer, pl_module, minutes):
        t = time.monotonic()
        was = pl_module.training
        pl_module.eval()
        rec = reconstruct_pytorch(_Probe(pl_module, self.cfg), self.scan)
        pl_module.train(was)
        m = evaluate(
            rec.object,
            self.scan.object,
            positions_px=rec.positions_px,
            patch_size=self.scan.patch_size,
        )
        self.rows.append(
            {
                "minutes": round(minutes, 2),
                "epoch": trainer.current_epoch + 1,
                "amp_ssim": m["amp_ssim"],
                "phase_ssim": m["phase_ssim"],
            }
        )
        print(self.rows[-1], flush=True)
        self.eval_time += time.monotonic() - t

    def on_train_epoch_end(self, trainer, pl_module):
        minutes = (time.monotonic() - self.t0 - self.eval_time) / 60
        while self.marks and minutes >= self.marks[0]:
            self.marks.pop(0)
            self._evaluate(trainer, pl_module, minutes)

    def on_train_end(self, trainer, pl_module):
        minutes = (time.monotonic() - self.t0 - self.eval_time) / 60
        self._evaluate(trainer, pl_module, minutes)


def _ptychi_reference(scan, workdir: Path, threads: int) -> dict | None:
    """pty-chi LSQML-100 on ``scan`` (saved to ``workdir``): its SSIMs and seconds, or
    None without a pty-chi interpreter."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_ptychi import find_ptychi_python, run_ptychi, score

    from ptychopinn.data import save_npz

    if find_ptychi_python() is None:
        return None
    path = save_npz(scan, workdir / "scan.npz")
    res = run_ptychi(path, "lsqml", 100, threads)
    m = score(res["object"], scan)
    return {"amp_ssim": m["amp_ssim"], "phase_ssim": m["phase_ssim"],
            "seconds": res["reconstruction_s"]}


def _ptychi_lines(rows: list[dict], lsq: dict) -> list[str]:
    """Lines saying when the curve reached LSQML-100's amplitude SSIM (to within 0.05,
    and at or above it), in training minutes against LSQML's seconds."""
    out = [f"- pty-chi LSQML-100 on the same scan: amp / phase SSIM {lsq['amp_ssim']:.3f} / "
           f"{lsq['phase_ssim']:.3f} in {lsq['seconds']:.1f} s (compute, its own process)"]
    for what, margin in (("to within 0.05 of", 0.05), ("at or above", 0.0)):
        hit = next((r for r in rows if r["amp_ssim"] >= lsq["amp_ssim"] - margin), None)
        if hit is None:
            out.append(f"- amp SSIM {what} LSQML-100's: not within the training budget "
                       f"(best {max(r['amp_ssim'] for r in rows):.3f})")
        else:
            out.append(f"- amp SSIM {what} LSQML-100's: at the {hit['minutes']} min mark "
                       f"(epoch {hit['epoch']}; {hit['minutes'] * 60 / lsq['seconds']:.1f}x "
                       "LSQML-100's time)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--minutes", type=float, default=8.0, help="training budget")
    ap.add_argument("--architecture", default=None)
    ap.add_argument("--set", action="append", default=[], help="extra config overrides k=v")
    ap.add_argument("--seed", type=int, default=0, help="simulation seed")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--ptychi", action="store_true",
                    help="also run pty-chi LSQML (100 epochs) on the same scan first")
    ap.add_argument("--record", action="store_true", help="append to docs/benchmarks.md")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from ptychopinn.config.io import merge, parse_set

    scan = simulate_scan(SimulationConfig(seed=args.seed))
    out = Path(tempfile.mkdtemp(prefix="bench_curve_"))
    lsq = None
    if args.ptychi:
        lsq = _ptychi_reference(scan, out, args.threads or torch.get_num_threads())
        if lsq is None:
            ap.error("--ptychi: no pty-chi interpreter (see benchmarks/bench_ptychi.py)")
        print(f"pty-chi LSQML-100: amp / phase SSIM {lsq['amp_ssim']:.3f} / "
              f"{lsq['phase_ssim']:.3f} in {lsq['seconds']:.1f} s", flush=True)
    data = {
        "output_dir": str(out),
        "max_time_minutes": args.minutes,
        "nepochs": 100000,
        "save_reconstruction": False,
        "execution": {"accelerator": "cpu", "logger": "none", "progress_bar": False},
    }
    if args.architecture:
        data["model"] = {"architecture": args.architecture}
    data = merge(data, parse_set(args.set))
    cfg = TrainingConfig.model_validate(data)
    marks = [m for m in (1, 2, 5, 10, 20, 30, 45, 60) if m < args.minutes]
    cb = EvalCallback(scan, cfg, marks)
    res = train_pytorch(cfg, scan, extra_callbacks=[cb])
    epochs = len(res.history)
    n_pat = scan.n_patterns * cfg.model.n_channels
    fit = res.timings_s["fit"] - cb.eval_time
    header = (
        f"architecture={cfg.model.architecture} gridsize={cfg.model.gridsize} "
        f"epochs={epochs} fit={fit:.0f}s ({epochs * n_pat / max(fit, 1e-9):.0f} pattern-passes/s)"
    )
    lines = ["| minutes | epoch | amp SSIM | phase SSIM |", "|---|---|---|---|"]
    lines += [
        f"| {r['minutes']} | {r['epoch']} | {r['amp_ssim']:.3f} | {r['phase_ssim']:.3f} |"
        for r in cb.rows
    ]
    if lsq is not None:
        lines += ["", *_ptychi_lines(cb.rows, lsq)]
    table = "\n".join(lines)
    print(header)
    print(table)
    if args.record:
        import sys

        sys.path.insert(0, str(Path(__file__).parent))
        from _record import append_section

        append_section(
            f"Training curve: {cfg.model.architecture}, {args.minutes:g} min", table, notes=header
        )


if __name__ == "__main__":
    main()
