"""Reconstruct a scan in our NPZ data contract with pty-chi (LSQML or ePIE).

This script runs INSIDE the separate pty-chi virtual environment (it imports
``ptychi`` and its CUDA-built torch, never ``ptychopinn``) and talks to our
benchmarks only through files: it reads an NPZ in our data contract with numpy
and writes a result NPZ.

Input keys: ``diffraction`` (or ``diff3d``) amplitudes ``(n, N, N)`` with the
zero frequency at ``[N//2, N//2]`` (or ``intensity``: counts), ``xcoords``
(column), ``ycoords`` (row) = probe CENTRE in object pixels, ``probeGuess``
``(N, N)`` or ``(M, N, N)`` complex, and optionally ``objectGuess`` (only its
SHAPE is used: the reconstruction starts from a uniform object; without it the
frame is ``[0, ceil(max + N/2) + 1)``).

Conventions bridged here (verified against a simulated scan):

* pty-chi predicts ``|fft2(probe * patch)|**2`` with the unnormalised
  ("backward") FFT and the zero frequency at the corner; our counts use
  ``norm="ortho"`` and a centred zero frequency. So the probe is divided by
  ``sqrt(N * N)`` and the data are passed as counts with
  ``data_options.fft_shift=True``.
* pty-chi's patch at position ``p`` (``[y, x]``, origin ``pos_origin_coords``
  in buffer pixels) starts at buffer pixel ``p + origin - (N - 1) / 2``; ours
  starts at ``y - N/2``. With ``origin = c - 0.5`` (``c = (H//2, W//2)``) and
  ``p = y - c`` the two agree, so pty-chi's object buffer IS our object frame.

Output keys: ``object`` complex64 ``(H, W)`` (our frame), ``probe`` (final,
divided back to our units), ``positions_px`` ``(n, 2)`` ``[y, x]`` (final),
``loss`` per epoch, ``setup_s``, ``reconstruction_s`` (``time.perf_counter``
around the epochs only; with ``--checkpoint-every`` the sum of the chunks,
checkpoint writing excluded), ``reconstruction_cpu_s`` (process CPU seconds of the
same span, all threads), ``import_s``, ``epochs`` (done), ``epochs_requested``, ``batch_size``, ``threads``,
``algorithm`` and ``options_json``.
"""

from __future__ import annotations

import time

_T_START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import zipfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

log = logging.getLogger("ptychi_runner")

ALGORITHMS = ("lsqml", "epie")
DEFAULT_BATCH = {"lsqml": 100, "epie": 25}


class InputError(ValueError):
    """A bad input file or option (the message names the file and the key)."""


def read_scan(path: Path) -> dict[str, np.ndarray]:
    """Counts ``(n, N, N)`` (zero frequency centred), positions, probe, object shape."""
    if not zipfile.is_zipfile(path):
        raise InputError(f"{path}: not an NPZ file.")
    with np.load(path, allow_pickle=False) as z:
        keys = set(z.files)
        if "diffraction" in keys or "diff3d" in keys:
            amp = np.asarray(z["diffraction" if "diffraction" in keys else "diff3d"], np.float64)
            counts = amp**2
        elif "intensity" in keys:
            counts = np.asarray(z["intensity"], np.float64)
        else:
            raise InputError(
                f"{path}: needs 'diffraction' (amplitudes) or 'intensity' (counts); found "
                f"keys {sorted(keys)}."
            )
        for k in ("xcoords", "ycoords", "probeGuess"):
            if k not in keys:
                raise InputError(f"{path}: missing key '{k}'; found keys {sorted(keys)}.")
        pos = np.stack([z["ycoords"], z["xcoords"]], axis=1).astype(np.float64)
        probe = np.asarray(z["probeGuess"]).astype(np.complex64)
        obj_shape = tuple(z["objectGuess"].shape[-2:]) if "objectGuess" in keys else None
    if counts.ndim != 3 or counts.shape[1] != counts.shape[2]:
        raise InputError(f"{path}: diffraction must be (n, N, N); found {counts.shape}.")
    if pos.shape[0] != counts.shape[0]:
        raise InputError(
            f"{path}: {pos.shape[0]} positions for {counts.shape[0]} patterns (xcoords/ycoords)."
        )
    if probe.ndim == 2:
        probe = probe[None]
    n_pix = counts.shape[-1]
    if probe.ndim != 3 or probe.shape[-2:] != (n_pix, n_pix):
        raise InputError(f"{path}: probeGuess must be (N, N) or (M, N, N) with N={n_pix}; "
                         f"found {probe.shape}.")
    if obj_shape is None:
        hi = np.ceil(pos.max(axis=0) + n_pix / 2).astype(int) + 1
        obj_shape = (int(hi[0]), int(hi[1]))
    return {"counts": counts.astype(np.float32), "positions_px": pos, "probe": probe,
            "object_shape": np.asarray(obj_shape)}


def build_options(args: argparse.Namespace, n_pix: int, obj_shape: tuple[int, int]):
    """pty-chi task options for ``args.algorithm`` (``args.device``, float32, fixed probe and
    positions unless ``--refine-probe`` / ``--refine-positions``)."""
    import ptychi.api as api

    alg = args.algorithm
    options = api.LSQMLOptions() if alg == "lsqml" else api.EPIEOptions()
    ro = options.reconstructor_options
    ro.num_epochs = args.epochs
    ro.batch_size = args.batch_size
    ro.default_device = api.Devices.GPU if args.device == "gpu" else api.Devices.CPU
    ro.default_dtype = api.Dtypes.FLOAT32
    ro.random_seed = args.seed
    ro.batching_mode = api.BatchingModes.RANDOM
    if alg == "lsqml":
        ro.noise_model = api.NoiseModels(args.noise_model)
        # With a known probe the first-epoch probe rescaling only wastes an epoch.
        ro.rescale_probe_intensity_in_first_epoch = bool(args.refine_probe)

    options.data_options.fft_shift = True  # our zero frequency is centred; pty-chi's is at [0, 0]

    oo = options.object_options
    oo.optimizable = True
    oo.pixel_size_m = 1.0
    oo.determine_position_origin_coords_by = api.ObjectPosOriginCoordsMethods.SPECIFIED
    oo.position_origin_coords = [obj_shape[0] // 2 - 0.5, obj_shape[1] // 2 - 0.5]
    # A fixed, known probe fixes the scale: keep pty-chi from renormalising the object.
    oo.remove_object_probe_ambiguity.enabled = bool(args.refine_probe)
    if alg == "epie":
        oo.alpha = args.alpha

    po = options.probe_options
    po.optimizable = bool(args.refine_probe)
    if args.refine_probe:
        po.optimization_plan.start = args.probe_start_epoch
    if alg == "epie":
        po.alpha = args.alpha

    options.probe_position_options.optimizable = bool(args.refine_positions)
    return options


def run(args: argparse.Namespace, import_s: float) -> dict[str, np.ndarray]:
    """Reconstruct ``args.scan``; returns the arrays of the result NPZ."""
    import torch

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    from ptychi.api.task import PtychographyTask

    import_s += time.perf_counter() - t0

    scan = read_scan(Path(args.scan))
    counts, pos, probe = scan["counts"], scan["positions_px"], scan["probe"]
    obj_shape = (int(scan["object_shape"][0]), int(scan["object_shape"][1]))
    n_pix = counts.shape[-1]
    centre = np.array([obj_shape[0] // 2, obj_shape[1] // 2], dtype=np.float64)
    rel = pos - centre
    probe_scale = float(n_pix)  # ortho -> backward FFT: |fft2(p/N * o)|^2 = our counts

    def new_task():
        return PtychographyTask(
            build_options(args, n_pix, obj_shape),
            diffraction_data=counts,
            object_data=np.ones((1, *obj_shape), dtype=np.complex64),
            probe_data=(probe / probe_scale)[None].astype(np.complex64),
            probe_position_x_px=rel[:, 1].astype(np.float32),
            probe_position_y_px=rel[:, 0].astype(np.float32),
        )

    def sync() -> None:
        if args.device == "gpu":
            torch.cuda.synchronize()

    warmup_s = 0.0
    if args.warmup_epochs > 0:
        # a throw-away task pays the one-off costs (CUDA context, FFT plans, kernel
        # loading) so the timed run measures the reconstruction alone
        t_w = time.perf_counter()
        new_task().run(n_epochs=args.warmup_epochs)
        sync()
        warmup_s = time.perf_counter() - t_w
    t_setup = time.perf_counter()
    task = new_task()
    sync()
    setup_s = time.perf_counter() - t_setup

    reconstruction_s = reconstruction_cpu_s = 0.0
    done = 0
    chunk = args.checkpoint_every if args.checkpoint_every > 0 else args.epochs
    while done < args.epochs:
        n_run = min(chunk, args.epochs - done)
        t_rec, c_rec = time.perf_counter(), time.process_time()
        task.run(n_epochs=n_run)
        sync()
        reconstruction_s += time.perf_counter() - t_rec
        reconstruction_cpu_s += time.process_time() - c_rec
        done += n_run
        if done < args.epochs:  # partial result, so a killed run still leaves something
            write_npz(Path(args.output), _result(task, args, probe_scale, centre, done, {
                "setup_s": setup_s, "reconstruction_s": reconstruction_s,
                "reconstruction_cpu_s": reconstruction_cpu_s, "import_s": import_s,
                "warmup_s": warmup_s}))
            log.info("checkpoint after %d epochs (%.1f s)", done, reconstruction_s)
    log.info("%s: %d epochs in %.2f s (setup %.2f s, import %.2f s)",
             args.algorithm, args.epochs, reconstruction_s, setup_s, import_s)
    return _result(task, args, probe_scale, centre, done, {
        "setup_s": setup_s, "reconstruction_s": reconstruction_s,
        "reconstruction_cpu_s": reconstruction_cpu_s, "import_s": import_s,
        "warmup_s": warmup_s})


def _result(task, args: argparse.Namespace, probe_scale: float, centre: np.ndarray,
            epochs_done: int, times: dict[str, float]) -> dict[str, np.ndarray]:
    """The arrays of the result NPZ after ``epochs_done`` epochs."""
    import torch

    obj = task.get_data_to_cpu("object", as_numpy=True)[0].astype(np.complex64)
    probe_out = task.get_data_to_cpu("probe", as_numpy=True)[0] * probe_scale
    pos_out = task.get_data_to_cpu("probe_positions", as_numpy=True).astype(np.float64) + centre
    table = task.reconstructor.loss_tracker.table
    loss = np.asarray(table["loss"], dtype=np.float64) if len(table) else np.zeros(0)
    opts = {k: v for k, v in vars(args).items()}
    opts["ptychi_version"] = _version("ptychi")
    opts["torch_version"] = torch.__version__
    opts["options_class"] = type(task.options).__name__
    opts["device"] = str(torch.get_default_device())
    return {
        "object": obj,
        "probe": probe_out.astype(np.complex64),
        "positions_px": pos_out,
        "loss": loss,
        **{k: np.float64(v) for k, v in times.items()},
        "epochs": np.int64(epochs_done),
        "epochs_requested": np.int64(args.epochs),
        "batch_size": np.int64(args.batch_size),
        "threads": np.int64(args.threads),
        "algorithm": np.asarray(args.algorithm),
        "options_json": np.asarray(json.dumps(opts)),
    }


def _version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Atomic ``np.savez`` (temporary file in the same folder, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp.npz", dir=path.parent)
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("scan", help="input NPZ in our data contract")
    p.add_argument("output", help="result NPZ to write")
    p.add_argument("--algorithm", choices=ALGORITHMS, default="lsqml")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=None,
                   help="patterns per update (default: lsqml 100, epie 25)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                   help="where pty-chi runs (gpu: its default CUDA device)")
    p.add_argument("--warmup-epochs", type=int, default=0,
                   help="epochs of a throw-away task run before the timed one (one-off GPU "
                        "start-up costs; reported as warmup_s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise-model", choices=("gaussian", "poisson"), default="gaussian",
                   help="LSQML noise model")
    p.add_argument("--alpha", type=float, default=0.1, help="ePIE object/probe step (alpha)")
    p.add_argument("--refine-probe", action="store_true", help="also refine the probe")
    p.add_argument("--probe-start-epoch", type=int, default=1,
                   help="first epoch of probe refinement (with --refine-probe)")
    p.add_argument("--refine-positions", action="store_true", help="also refine positions")
    p.add_argument("--checkpoint-every", type=int, default=0,
                   help="write the partial result every this many epochs (0: only at the end)")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    if args.batch_size is None:
        args.batch_size = DEFAULT_BATCH[args.algorithm]
    if args.warmup_epochs < 0:
        p.error(f"--warmup-epochs must be >= 0; found {args.warmup_epochs}")
    for name in ("epochs", "batch_size", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1; found {getattr(args, name)}")
    return args


def main(argv: list[str] | None = None) -> int:
    import_s = time.perf_counter() - _T_START
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.device == "gpu":
        import torch

        if not torch.cuda.is_available():
            print("ptychi_runner: error: --device gpu but torch sees no CUDA device.",
                  file=sys.stderr)
            return 2
    try:
        result = run(args, import_s)
    except InputError as exc:
        print(f"ptychi_runner: error: {exc}", file=sys.stderr)
        return 2
    write_npz(Path(args.output), result)
    print(json.dumps({k: float(result[k]) for k in ("import_s", "setup_s", "reconstruction_s",
                                               "reconstruction_cpu_s", "warmup_s")}
                     | {"final_loss": float(result["loss"][-1]) if result["loss"].size else None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
