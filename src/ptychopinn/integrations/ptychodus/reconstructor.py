"""The ``PtychoPINN-Next`` reconstructor library for Ptychodus 1.7.

Two `TrainableReconstructor` s, ``PINN`` (self-supervised) and ``Supervised``
(trained on the product's object as truth), run ptychopinn in-process:

* models are our one-file bundles (``*.safetensors``); ``ptychodus -b``
  looks for ``model.ptychopinn.safetensors`` in the input directory;
* ``reconstruct`` stitches the patterns chunk by chunk (``PatternsPerChunk``,
  spatial stripes) and yields the product after every chunk; a probe or
  positions refined with the object (``refine_probe``, ``refine_positions``,
  ``position_refine_epochs``) go into the product with it, which needs one
  chunk (one probe, one frame for the positions);
* ``train(input_path, output_path)`` reads ``product.h5`` + ``diffraction.h5``
  (batch layout) or an NPZ exported by ``export_training_data`` from
  ``input_path`` and writes a run directory (bundle included) to
  ``output_path``; it yields the losses of every epoch.

Settings live in the INI groups ``PtychoPINNNext`` and
``PtychoPINNNextTraining``; the algorithm key is ``ptychopinn-next_pinn`` or
``ptychopinn-next_supervised`` (``[Processing] Algorithm``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from ptychodus.api.product import LossValue
from ptychodus.api.reconstruct import (
    ReconstructInput,
    ReconstructorLibrary,
    ReconstructOutput,
    TrainableReconstructor,
    TrainOutput,
)

from ptychopinn.errors import BundleError, ConfigError, DataError

log = logging.getLogger(__name__)

LIBRARY_NAME = "PtychoPINN-Next"
MODES = {"PINN": "pinn", "Supervised": "supervised"}
MODEL_FILE_EXTENSION = ".ptychopinn.safetensors"
MODEL_FILE_FILTER = "ptychopinn Model Bundles (*.safetensors)"
TRAINING_DATA_FILE_FILTER = "ptychopinn NPZ Scans (*.npz)"
PROGRESS_GOAL = 100
PTYCHODUS_SETS = frozenset({"model_path", "data_file", "output_dir", "backend"})
"""InferenceConfig keys that Ptychodus decides (the loaded model and its backend, the
product); an InferenceConfigFile that sets them is refused."""
COPY_CHUNK_BYTES = 1 << 24


def route_lightning_logging() -> None:
    """Let Lightning's log lines through the host's (Ptychodus's) root handlers, once.

    On import Lightning gives its ``lightning`` logger a console handler of its own
    (and, when the root logger had no handler yet, its subpackages too), so under
    Ptychodus, which configures the root logger, each line ("GPU available: ...") was
    printed twice, and Ptychodus's ``--log-level`` did not apply to them. When the root
    logger has handlers, Lightning's are removed and its loggers follow the root's level;
    otherwise (no host logging) nothing changes.
    """
    from ptychopinn.cli.main import route_lightning_logging as through_root

    if logging.getLogger().handlers:
        through_root()


def algorithm_key(reconstructor: str = "PINN") -> str:
    """The ``[Processing] Algorithm`` value selecting one of our reconstructors."""
    return f"{LIBRARY_NAME.casefold()}_{reconstructor.casefold()}"


class PtychoPINNSettings:
    """Our parameters in the Ptychodus settings registry (saved in ``settings.ini``)."""

    def __init__(self, registry) -> None:
        group = registry.create_group("PtychoPINNNext")
        self.accelerator = group.create_string_parameter("Accelerator", "auto")
        self.precision = group.create_string_parameter("Precision", "auto")
        # 0: 'auto' (InferenceConfig.batch_size: 64 on GPUs, fewer for a float32 CPU network)
        self.inference_batch_size = group.create_integer_parameter(
            "InferenceBatchSize", 0, minimum=0)
        self.patterns_per_chunk = group.create_integer_parameter(
            "PatternsPerChunk", 4096, minimum=1)
        self.stitch_weight = group.create_string_parameter("StitchWeight", "auto")
        self.stitch_flat_above = group.create_real_parameter(
            "StitchFlatAbove", 0.01, minimum=1e-6, maximum=1.0)
        self.refine_epochs = group.create_integer_parameter("RefineEpochs", 0, minimum=0)
        self.refine_sparse_counts = group.create_boolean_parameter("RefineSparseCounts", True)
        self.inference_config_file = group.create_string_parameter("InferenceConfigFile", "")
        train = registry.create_group("PtychoPINNNextTraining")
        self.epochs = train.create_integer_parameter("Epochs", 60, minimum=1)
        self.max_time_minutes = train.create_real_parameter("MaxTimeMinutes", 8.0, minimum=0.0)
        self.batch_size = train.create_integer_parameter("BatchSize", 16, minimum=1)
        self.learning_rate = train.create_real_parameter("LearningRate", 2e-3, minimum=0.0)
        self.grid_size = train.create_integer_parameter("GridSize", 2, minimum=1, maximum=4)
        self.architecture = train.create_string_parameter("Architecture", "unet")
        self.probe_trainable = train.create_boolean_parameter("ProbeTrainable", False)
        self.validation_fraction = train.create_real_parameter(
            "ValidationFraction", 0.05, minimum=0.0, maximum=0.9)
        self.seed = train.create_integer_parameter("Seed", 0, minimum=0)
        self.config_file = train.create_string_parameter("ConfigFile", "")

    def inference_config(self):
        """An `InferenceConfig` from these settings; ``InferenceConfigFile`` (YAML/JSON, as for
        ``ptychopinn infer --config``), if set, overrides them key by key (any inference
        option: the refinement's probe, positions and preconditioner, the prior's passes),
        except what the plugin fixes (no figures, no logger, no progress bar)."""
        from ptychopinn.config import InferenceConfig, build
        from ptychopinn.config.io import merge, read_mapping

        data = {
            "batch_size": self.inference_batch_size.get_value() or "auto",
            "stitch_weight": self.stitch_weight.get_value(),
            "stitch_flat_above": self.stitch_flat_above.get_value(),
            "refine_epochs": self.refine_epochs.get_value(),
            "refine_sparse_counts": self.refine_sparse_counts.get_value(),
            "figures": False,
            "execution": {"accelerator": self.accelerator.get_value(), "logger": "none",
                          "precision": self.precision.get_value(), "progress_bar": False},
        }
        where = "Ptychodus settings [PtychoPINNNext]"
        path = self.inference_config_file.get_value().strip()
        if path:
            given = read_mapping(path)
            ptychodus_sets = sorted(set(given) & PTYCHODUS_SETS)
            if ptychodus_sets:
                raise ConfigError(
                    f"{path} (InferenceConfigFile): {', '.join(ptychodus_sets)} cannot be set "
                    "here: inside Ptychodus the model is the one loaded ('Load Model...'), the "
                    "scan is the product and the object goes back to it; remove those keys")
            fixed = {"figures": False, "execution": {"logger": "none", "progress_bar": False}}
            data = merge(merge(data, given), fixed)
            where = f"{path} (InferenceConfigFile, over the other {where})"
        return build(InferenceConfig, data, where=where)

    def check_refinement(self, cfg, n_chunks: int, n_patterns: int) -> None:
        """`ConfigError` for refinement options the product cannot take as asked.

        ``refine_probe`` / ``refine_positions`` without ``refine_epochs`` would be ignored
        without a word. A refined probe, or refined positions, go into the output product
        with the object; with several chunks each would refine its own probe and correct
        its positions in its own frame, which no one product holds consistently.
        """
        where = self.inference_config_file.get_value().strip() or "Ptychodus settings"
        idle = [k for k in ("refine_probe", "refine_positions") if getattr(cfg, k)]
        if idle and cfg.refine_epochs == 0:
            raise ConfigError(
                f"{where}: {' and '.join(idle)} act during the physics refinement after "
                "inference, which is off (refine_epochs 0): set refine_epochs (e.g. 40, or "
                "RefineEpochs in the panel), or drop them.")
        refined = [k for k, on in (("refine_probe", cfg.refine_probe),
                                   ("refine_positions", cfg.refine_positions),
                                   ("position_refine_epochs", cfg.position_refine_epochs > 0))
                   if on]
        if refined and n_chunks > 1:
            raise ConfigError(
                f"{where}: {', '.join(refined)} would run on each of the {n_chunks} chunks of "
                f"PatternsPerChunk={self.patterns_per_chunk.get_value()} patterns separately, "
                "each refining its own probe or correcting its positions in its own frame, "
                "which one product cannot hold consistently with its object. Set "
                f"PatternsPerChunk to at least {n_patterns} (the scan's patterns) or use "
                "'ptychopinn infer' for refinement.")

    def training_config(self, model_type: str, n_pix: int, output_dir: Path):
        """A `TrainingConfig`: ``ConfigFile`` (YAML/JSON) if set, else these settings."""
        from ptychopinn.config import TrainingConfig, build
        from ptychopinn.config.io import merge, read_mapping

        fixed = {"output_dir": str(output_dir), "model": {"model_type": model_type, "N": n_pix}}
        path = self.config_file.get_value().strip()
        if path:  # merged before validation so that mode-dependent defaults apply
            return build(TrainingConfig, merge(read_mapping(path), fixed), where=path)
        minutes = self.max_time_minutes.get_value()
        data = {
            **fixed,
            "model": {**fixed["model"], "gridsize": self.grid_size.get_value(),
                      "architecture": self.architecture.get_value()},
            "nepochs": self.epochs.get_value(),
            "max_time_minutes": minutes if minutes > 0 else None,
            "batch_size": self.batch_size.get_value(),
            "learning_rate": self.learning_rate.get_value(),
            "probe_trainable": self.probe_trainable.get_value(),
            "val_fraction": self.validation_fraction.get_value(),
            "seed": self.seed.get_value(),
            "save_reconstruction": False,
            "execution": {"accelerator": self.accelerator.get_value(), "progress_bar": False},
        }
        return build(TrainingConfig, data, where="Ptychodus settings [PtychoPINNNextTraining]")


def _chunks(positions_px: np.ndarray, size: int) -> list[np.ndarray]:
    """Pattern indices in spatial stripes (sorted by row, then column) of ~``size``."""
    n = positions_px.shape[0]
    order = np.lexsort((positions_px[:, 1], positions_px[:, 0]))
    k = max(1, int(np.ceil(n / size)))
    return [c for c in np.array_split(order, k) if c.size]


def _align_phase(num_acc: np.ndarray, num: np.ndarray, den_acc: np.ndarray,
                 den: np.ndarray) -> np.ndarray:
    """Rotate a chunk's weighted object to the global phase of what is stitched so far."""
    overlap = (den_acc > 0) & (den > 0)
    if not overlap.any():
        return num
    c = np.vdot(num_acc[overlap], num[overlap])
    return num * np.exp(-1j * np.angle(c)) if abs(c) > 0 else num


def _refined_probe_and_positions(recon, scan, idx: np.ndarray, cfg):
    """``(probe, positions_px)`` to write into the product with the object, each None
    where the reconstruction kept the input's. ``positions_px`` holds all of the scan's
    positions (in its, the input object's, frame) with the chunk ``idx`` replaced by
    those the object was reconstructed at (`PtychoPINNSettings.check_refinement` allows
    refined ones only when ``idx`` is the whole scan)."""
    probe = recon.refined_probe if cfg.refine_probe else None
    if cfg.refine_positions and recon.refined_positions_px is not None:
        at = recon.refined_positions_px
    elif cfg.position_refine_epochs > 0:
        at = recon.positions_px
    else:
        return probe, None
    positions = np.array(scan.positions_px, dtype=np.float64)
    positions[idx] = np.asarray(at, dtype=np.float64) + np.asarray(recon.frame_offset_px)
    return probe, positions


def load_training_scan(input_path: Path):
    """The training `Scan` in ``input_path`` (see the module docstring)."""
    from ptychodus.api.io import StandardFileLayout

    from ptychopinn.data.npz import load_npz
    from ptychopinn.integrations.ptychodus.files import ptychodus_to_scan

    p = Path(input_path)
    if p.is_file():
        return load_npz(p)
    if not p.is_dir():
        raise DataError(f"{p}: training input not found (a directory or an NPZ file).")
    product = StandardFileLayout.PRODUCT.path(p)
    diffraction = StandardFileLayout.DIFFRACTION.path(p)
    if product.is_file() and diffraction.is_file():
        return ptychodus_to_scan(product, diffraction)
    npz = sorted(p.glob("*.npz"))
    if len(npz) == 1:
        return load_npz(npz[0])
    raise DataError(
        f"{p}: expected '{product.name}' + '{diffraction.name}' (Ptychodus batch layout) or "
        f"exactly one NPZ written by 'Export Training Data'; found {len(npz)} NPZ files "
        f"{[q.name for q in npz]}."
    )


class PtychoPINNReconstructor(TrainableReconstructor):
    """One ptychopinn mode (``PINN`` or ``Supervised``) as a Ptychodus reconstructor."""

    def __init__(self, name: str, settings: PtychoPINNSettings) -> None:
        if name not in MODES:
            raise ValueError(f"reconstructor name must be one of {sorted(MODES)}; found {name!r}")
        self._name = name
        self._settings = settings
        self._model = None
        self._model_path: Path | None = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def model_type(self) -> str:
        return MODES[self._name]

    def get_progress_goal(self) -> int:
        return PROGRESS_GOAL

    # ------------------------------------------------------------- models
    def is_model_loaded(self) -> bool:
        return self._model is not None

    def get_model_file_filter(self) -> str:
        return MODEL_FILE_FILTER

    def get_model_file_extension(self) -> str:
        return MODEL_FILE_EXTENSION

    def load_model_from_file(self, file_path: Path) -> None:
        from ptychopinn.api import load_bundle
        from ptychopinn.bundle.format import resolve_bundle_path

        route_lightning_logging()
        path = resolve_bundle_path(file_path)
        model = load_bundle(path)
        trained = model.config.model.model_type
        if trained != self.model_type:
            log.warning("%s: the bundle was trained as %r; using it in the %s reconstructor.",
                        path, trained, self._name)
        self._model, self._model_path = model, path
        log.info("loaded %s (N=%d)", path, model.config.model.N)

    def save_model(self, file_path: Path) -> None:
        """Copy the loaded bundle to ``file_path`` atomically (an existing file there is
        replaced only once the copy is complete). A folder gets the bundle under its
        standard name inside it, as a run folder holds it (and as loading accepts)."""
        from ptychopinn.atomic import atomic_open, check_output_file
        from ptychopinn.bundle.format import BUNDLE_FILENAME

        if self._model_path is None:
            raise RuntimeError(f"{LIBRARY_NAME} {self._name}: no model loaded or trained to save.")
        target = Path(file_path)
        if target.is_dir():
            target = target / BUNDLE_FILENAME
        target = check_output_file(target, f"{LIBRARY_NAME} model file",
                                   example=BUNDLE_FILENAME)
        if not self._model_path.is_file():
            raise BundleError(f"{self._model_path}: the loaded model's bundle file is no longer "
                              f"there to copy to {target}; load or train the model again.")
        if target.exists() and os.path.samefile(target, self._model_path):
            return
        with open(self._model_path, "rb") as src, atomic_open(target, "wb") as dst:
            while block := src.read(COPY_CHUNK_BYTES):
                dst.write(block)
        log.info("saved %s to %s", self._model_path, target)

    # ------------------------------------------------------------- reconstruct
    def reconstruct(self, parameters: ReconstructInput) -> Iterator[ReconstructOutput]:
        from ptychopinn.api import reconstruct
        from ptychopinn.integrations.ptychodus.convert import (
            input_to_scan,
            product_with_object,
            recon_on_grid,
        )

        if self._model is None:
            raise RuntimeError(
                f"{LIBRARY_NAME} {self._name}: no model loaded. Use 'Load Model...' (a "
                f"*.safetensors bundle) or, in batch mode, put 'model{MODEL_FILE_EXTENSION}' "
                "in the input directory."
            )
        scan = input_to_scan(parameters, source=parameters.product.metadata.name)
        n_model = self._model.config.model.N
        if scan.patch_size != n_model:
            raise DataError(
                f"{scan.source}: the patterns are {scan.patch_size} x {scan.patch_size} but the "
                f"model {self._model_path} expects N={n_model}; crop the diffraction data to "
                f"{n_model} x {n_model} in Ptychodus or train a model for this size."
            )
        cfg = self._settings.inference_config()
        chunks = _chunks(scan.positions_px, self._settings.patterns_per_chunk.get_value())
        self._settings.check_refinement(cfg, len(chunks), scan.n_patterns)
        product = parameters.product
        shape = (product.object_.height_px, product.object_.width_px)
        num = np.zeros(shape, np.complex128)
        den = np.zeros(shape, np.float64)
        for k, idx in enumerate(chunks):
            recon = reconstruct(self._model, scan.subset(idx), cfg)
            n_k, d_k = recon_on_grid(recon, shape)
            num += _align_phase(num, n_k, den, d_k)
            den += d_k
            progress = int(round(PROGRESS_GOAL * (k + 1) / len(chunks)))
            log.info("%s: chunk %d/%d (%d patterns)", self._name, k + 1, len(chunks), idx.size)
            probe, positions = _refined_probe_and_positions(recon, scan, idx, cfg)
            yield ReconstructOutput(
                product=product_with_object(product, num, den, probe=probe,
                                            positions_px=positions),
                progress=progress, status=0)

    # ------------------------------------------------------------- training
    def get_training_data_file_filter(self) -> str:
        return TRAINING_DATA_FILE_FILTER

    def export_training_data(self, file_path: Path, parameters: ReconstructInput) -> None:
        from ptychopinn.data.npz import save_npz
        from ptychopinn.integrations.ptychodus.convert import input_to_scan

        save_npz(input_to_scan(parameters, source=parameters.product.metadata.name), file_path)

    def train(self, input_path: Path, output_path: Path) -> Iterator[TrainOutput]:
        from ptychopinn.api import train

        route_lightning_logging()
        scan = load_training_scan(Path(input_path))
        if self.model_type == "supervised" and scan.object is None:
            raise ConfigError(
                f"{scan.source}: Supervised training needs the product's object as the truth "
                "(e.g. an earlier iterative reconstruction); it has none that covers the scan "
                "(an object uniform over the scan is an initial guess or a stand-in, not a "
                "truth)."
            )
        cfg = self._settings.training_config(self.model_type, scan.patch_size, Path(output_path))
        # the output folder was chosen in Ptychodus's training dialog: train there again
        result = train(cfg, scan, overwrite=True)
        self.load_model_from_file(Path(result.bundle_path))
        history = result.history or []
        n = max(1, len(history))
        training: list[LossValue] = []
        validation: list[LossValue] = []
        for i, row in enumerate(history):
            epoch = int(row.get("epoch", i))
            if "train/loss" in row:
                training.append(LossValue(epoch=epoch, value=float(row["train/loss"])))
            if "val/loss" in row:
                validation.append(LossValue(epoch=epoch, value=float(row["val/loss"])))
            yield TrainOutput(training_loss=list(training), validation_loss=list(validation),
                              progress=int(round(PROGRESS_GOAL * (i + 1) / n)), status=0)
        if not history:
            yield TrainOutput(progress=PROGRESS_GOAL, status=0)


class PtychoPINNReconstructorLibrary(ReconstructorLibrary):
    """The ``PtychoPINN-Next`` library: reconstructors ``PINN`` and ``Supervised``.

    Parameters
    ----------
    settings_registry
        Ptychodus's ``SettingsRegistry`` (our INI groups are added to it).
    is_developer_mode_enabled
        Accepted for symmetry with Ptychodus's libraries; unused.
    """

    def __init__(self, settings_registry, is_developer_mode_enabled: bool = False) -> None:
        super().__init__("ptychopinn")
        self.settings = PtychoPINNSettings(settings_registry)
        self._reconstructors = [PtychoPINNReconstructor(name, self.settings) for name in MODES]

    @property
    def name(self) -> str:
        return LIBRARY_NAME

    def __iter__(self) -> Iterator[PtychoPINNReconstructor]:
        return iter(self._reconstructors)

    def __getitem__(self, name: str) -> PtychoPINNReconstructor:
        for r in self._reconstructors:
            if r.name.casefold() == name.casefold():
                return r
        raise KeyError(f"{LIBRARY_NAME} has no reconstructor {name!r}; choose from {list(MODES)}")
