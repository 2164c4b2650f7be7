"""``ptychopinn-ptychodus``: Ptychodus (GUI or ``-b`` batch) with our library added.

Ptychodus 1.7.0 has no plugin hook for reconstructor libraries: ``ModelCore``
builds a hard-coded list and passes it to ``ProcessingCore(task_manager,
settings_registry, product_api, algorithm_libraries)`` (``ptychodus.model.core``).
`patched_ptychodus` swaps that module's ``ProcessingCore`` name for a subclass
that appends `PtychoPINNReconstructorLibrary` to the list, and (GUI) the
controller's ``ProcessingController`` for one that adds our settings panel.
Nothing in Ptychodus is edited; the names are restored on exit. When the
settings select no available algorithm, ``PtychoPINN-Next/PINN`` is chosen.

Usage: ``ptychopinn-ptychodus [PTYCHODUS ARGS]``, e.g.
``ptychopinn-ptychodus -b reconstruct -i IN -o OUT [-s settings.ini]``.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from ptychopinn.integrations.ptychodus.reconstructor import (
    LIBRARY_NAME,
    PtychoPINNReconstructorLibrary,
    algorithm_key,
)

log = logging.getLogger(__name__)

SUPPORTED_SERIES = "1.7."
ACCELERATORS = ("auto", "cpu", "gpu", "mps")
PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed")
ARCHITECTURES = ("unet", "cnn")
STITCH_WEIGHTS = ("auto", "probe", "uniform")


@dataclass
class PatchState:
    """What `patched_ptychodus` created: the libraries added to each ``ModelCore``."""

    libraries: list[PtychoPINNReconstructorLibrary] = field(default_factory=list)


def _check_version() -> None:
    from importlib.metadata import version

    found = version("ptychodus")
    if not found.startswith(SUPPORTED_SERIES):
        log.warning("ptychodus %s found; this integration was written for %sx and patches "
                    "ptychodus.model.core.ProcessingCore.", found, SUPPORTED_SERIES)


def _split_args(args: tuple, kwargs: dict, index: int, name: str) -> tuple[list, bool]:
    if name in kwargs:
        return list(kwargs[name]), True
    if len(args) <= index:
        raise RuntimeError(f"ptychodus API changed: no '{name}' argument to patch.")
    return list(args[index]), False


def _settings_panel(library: PtychoPINNReconstructorLibrary):
    """A Ptychodus ``ReconstructorViewControllerFactory`` showing our settings (needs PyQt5)."""
    from ptychodus.controller.parameters import ParameterViewBuilder
    from ptychodus.controller.processing import ReconstructorViewControllerFactory

    class _Factory(ReconstructorViewControllerFactory):
        @property
        def name(self) -> str:
            return LIBRARY_NAME

        def create_view_controller(self, reconstructor_name: str):
            s = library.settings
            b = ParameterViewBuilder()
            g = "Inference"
            b.add_combo_box(s.accelerator, ACCELERATORS, "Accelerator:", group=g)
            b.add_combo_box(s.precision, PRECISIONS, "Precision (network):", group=g)
            b.add_spin_box(s.inference_batch_size, "Batch Size:", group=g)
            b.add_spin_box(s.patterns_per_chunk, "Patterns per Chunk:", group=g)
            b.add_combo_box(s.stitch_weight, STITCH_WEIGHTS, "Stitch Weight:", group=g)
            b.add_decimal_line_edit(s.stitch_flat_above,
                                    "Stitch Flat Above (fraction of probe peak):", group=g)
            b.add_spin_box(s.refine_epochs, "Refinement Epochs:", group=g)
            b.add_check_box(s.refine_sparse_counts,
                            "Refinement: smaller step when photon-sparse", group=g)
            b.add_line_edit(s.inference_config_file, "Config File (YAML, overrides):", group=g)
            g = "Training"
            b.add_spin_box(s.epochs, "Epochs:", group=g)
            b.add_decimal_line_edit(s.max_time_minutes, "Time Limit (min, 0 = none):", group=g)
            b.add_spin_box(s.batch_size, "Batch Size:", group=g)
            b.add_decimal_line_edit(s.learning_rate, "Learning Rate:", group=g)
            b.add_spin_box(s.grid_size, "Grid Size:", group=g)
            b.add_combo_box(s.architecture, ARCHITECTURES, "Architecture:", group=g)
            b.add_check_box(s.probe_trainable, "Refine Probe", group=g)
            b.add_decimal_line_edit(s.validation_fraction, "Validation Fraction:", group=g)
            b.add_spin_box(s.seed, "Seed:", group=g)
            b.add_line_edit(s.config_file, "Config File (YAML, overrides):", group=g)
            return b.build_widget()

    return _Factory()


@contextmanager
def patched_ptychodus(*, default_reconstructor: str | None = "PINN",
                      gui: bool = False) -> Iterator[PatchState]:
    """Register our library with every ``ModelCore`` built inside the block.

    Parameters
    ----------
    default_reconstructor
        Selected when the settings name no available algorithm (None: leave it).
    gui
        Also add our settings panel to the GUI (imports PyQt5).
    """
    import ptychodus.model.core as core

    _check_version()
    state = PatchState()
    original = core.ProcessingCore

    class ProcessingCoreWithPtychoPINN(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs) -> None:
            libraries, as_kw = _split_args(args, kwargs, 3, "algorithm_libraries")
            registry = kwargs.get("settings_registry", args[1] if len(args) > 1 else None)
            developer = logging.getLogger(core.__name__).getEffectiveLevel() <= logging.DEBUG
            library = PtychoPINNReconstructorLibrary(registry, developer)
            libraries.append(library)
            if as_kw:
                kwargs["algorithm_libraries"] = libraries
            else:
                args = (*args[:3], libraries, *args[4:])
            super().__init__(*args, **kwargs)
            self.ptychopinn_library = library
            state.libraries.append(library)
            param = self.algorithm_parameter
            if default_reconstructor and param.get_value() == "none_none":
                param.set_value(algorithm_key(default_reconstructor))

    restore = [(core, "ProcessingCore", original)]
    core.ProcessingCore = ProcessingCoreWithPtychoPINN
    try:
        if gui:
            restore.append(_patch_gui(state))
        yield state
    finally:
        for module, name, value in reversed(restore):
            setattr(module, name, value)


def _patch_gui(state: PatchState):
    import ptychodus.controller.core as ccore

    original = ccore.ProcessingController

    def processing_controller(*args, **kwargs):
        factories, as_kw = _split_args(args, kwargs, 9, "view_controller_factories")
        if state.libraries:
            factories.append(_settings_panel(state.libraries[-1]))
        if as_kw:
            kwargs["view_controller_factories"] = factories
        else:
            args = (*args[:9], factories, *args[10:])
        return original(*args, **kwargs)

    ccore.ProcessingController = processing_controller
    return ccore, "ProcessingController", original


@contextmanager
def _argv(argv: list[str]) -> Iterator[None]:
    saved = sys.argv
    sys.argv = argv
    try:
        yield
    finally:
        sys.argv = saved


def main(argv: Sequence[str] | None = None) -> int:
    """Run Ptychodus's own ``main`` with the ``PtychoPINN-Next`` library registered."""
    from ptychodus.__main__ import main as ptychodus_main

    args = list(sys.argv[1:] if argv is None else argv)
    batch = any(a in ("-b", "--batch") or a.startswith("--batch=") for a in args)
    gui = not batch and not any(a in ("-h", "--help", "-v", "--version") for a in args)
    if gui and importlib.util.find_spec("PyQt5") is None:
        print("ptychopinn-ptychodus: the Ptychodus GUI needs PyQt5 (pip install PyQt5); "
              "batch mode (-b reconstruct|train -i IN -o OUT) works without it.",
              file=sys.stderr)
        return 1
    with patched_ptychodus(gui=gui), _argv(["ptychopinn-ptychodus", *args]):
        return int(ptychodus_main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
