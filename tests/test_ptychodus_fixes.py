"""The Ptychodus integration's contracts: no fake truth from a stand-in object, refined
probe and positions kept with the object, atomic writes, the settings panel, logging once."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import get_args

import numpy as np
import pytest

pytest.importorskip("ptychodus")

from ptychopinn.integrations.ptychodus import convert  # noqa: E402

N = 32
DOCS = Path(__file__).resolve().parents[1] / "docs" / "ptychodus.md"


@pytest.fixture(scope="module")
def scan():
    """A small simulated scan (37 positions) with a physical geometry."""
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    s = simulate_scan(SimulationConfig(N=N, n_positions=37, photons_per_pattern=1e5, seed=5))
    return s.replace(pixel_size_m=10e-9, photon_energy_ev=10_000.0, detector_distance_m=2.0)


@pytest.fixture(scope="module")
def bundle(scan, tmp_path_factory) -> Path:
    """A tiny PINN trained for one epoch."""
    from ptychopinn.api import train
    from ptychopinn.config.schema import TrainingConfig

    out = tmp_path_factory.mktemp("ptychodus_fixes_model")
    cfg = TrainingConfig(
        output_dir=str(out), nepochs=1, max_time_minutes=0.5, n_groups=16,
        model={"N": N, "gridsize": 1, "n_filters_scale": 0.25},
        execution={"logger": "none", "progress_bar": False, "accelerator": "cpu"},
        save_reconstruction=False,
    )
    return Path(train(cfg, scan).bundle_path)


@pytest.fixture
def library():
    from ptychodus.api.settings import SettingsRegistry

    from ptychopinn.integrations.ptychodus import PtychoPINNReconstructorLibrary

    lib = PtychoPINNReconstructorLibrary(SettingsRegistry())
    lib.settings.accelerator.set_value("cpu")
    lib.settings.precision.set_value("32-true")
    return lib


# ------------------------------------------------------------------ 1. no fake truth
def test_a_scan_without_object_comes_back_without_one(scan, tmp_path):
    from ptychodus.api.io import load_product

    from ptychopinn.integrations.ptychodus import ptychodus_to_scan, scan_to_ptychodus

    bare = scan.replace(object=None)
    prod_p, diff_p = scan_to_ptychodus(bare, tmp_path / "product.h5", tmp_path / "diffraction.h5")
    written = np.asarray(load_product(prod_p).object_.get_layer(0))
    assert np.all(written == 1)  # the stand-in a product must hold
    back = ptychodus_to_scan(prod_p, diff_p)
    assert back.object is None  # ... is not a truth
    np.testing.assert_allclose(back.diffraction, scan.diffraction, rtol=1e-6, atol=1e-6)
    # a real object still comes back
    scan_to_ptychodus(scan, tmp_path / "t" / "product.h5", tmp_path / "t" / "diffraction.h5")
    truth = ptychodus_to_scan(tmp_path / "t" / "product.h5", tmp_path / "t" / "diffraction.h5")
    np.testing.assert_allclose(truth.object, scan.object)


def test_ptychodus_default_initial_object_is_not_a_truth(scan):
    """Ptychodus's default initial object is ones zero-padded outside the scan: uniform
    over the scan's patches, so no truth, while any real object is kept."""
    from ptychodus.api.object import Object
    from ptychodus.api.product import Product
    from ptychodus.api.reconstruct import ReconstructInput

    ri = convert.scan_to_reconstruct_input(scan.replace(object=None))
    product = ri.product
    margin = convert.scan_to_product(scan.replace(object=None), margin_px=2).object_
    arr = np.zeros((1, margin.height_px, margin.width_px), np.complex64)
    arr[:, 1:-1, 1:-1] = 0.7 * np.exp(0.3j)  # a constant with a zero border
    obj = Object(array=arr, pixel_geometry=margin.get_pixel_geometry(),
                 center=margin.get_center())

    def with_object(a):
        o = Object(array=a, pixel_geometry=obj.get_pixel_geometry(), center=obj.get_center())
        p = Product(metadata=product.metadata, probe_positions=product.probe_positions,
                    probes=product.probes, object_=o, losses=[])
        return convert.input_to_scan(ReconstructInput(ri.diffraction_patterns, ri.bad_pixels, p))

    assert with_object(arr).object is None
    textured = arr.copy()
    textured[0, arr.shape[1] // 2, arr.shape[2] // 2] *= 1.01  # one pixel differs: kept
    assert with_object(textured).object is not None


def test_supervised_training_refuses_a_stand_in_object(scan, library, tmp_path):
    from ptychopinn.errors import ConfigError
    from ptychopinn.integrations.ptychodus import scan_to_ptychodus

    src = tmp_path / "in"
    scan_to_ptychodus(scan.replace(object=None), src / "product.h5", src / "diffraction.h5")
    tiny = tmp_path / "tiny.yaml"  # bounds the run should the check be missing
    tiny.write_text("nepochs: 1\nn_groups: 8\nsave_reconstruction: false\n"
                    "model: {gridsize: 1, n_filters_scale: 0.25}\n"
                    "execution: {accelerator: cpu, logger: none, progress_bar: false}\n")
    library.settings.config_file.set_value(str(tiny))
    with pytest.raises(ConfigError, match="Supervised training needs.*uniform"):
        list(library["Supervised"].train(src, tmp_path / "run"))


# ------------------------------------------------------------------ 2. refined probe, positions
def _product_positions(product) -> np.ndarray:
    return convert.product_positions_px(product)


def _probe(product) -> np.ndarray:
    return np.asarray(product.probes.get_probe_no_opr().get_array())


def _run(library, bundle, scan, yaml_text, tmp_path, monkeypatch):
    """Reconstruct through the plugin with an InferenceConfigFile; returns the output
    products and the `Reconstruction` s that ptychopinn returned for them."""
    import ptychopinn.api as api

    seen = []
    real = api.reconstruct

    def spy(*args, **kwargs):
        seen.append(real(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(api, "reconstruct", spy)
    cfg = tmp_path / "infer.yaml"
    cfg.write_text(yaml_text)
    library.settings.inference_config_file.set_value(str(cfg))
    pinn = library["PINN"]
    pinn.load_model_from_file(bundle)
    outputs = list(pinn.reconstruct(convert.scan_to_reconstruct_input(scan)))
    return outputs, seen


def test_refined_probe_and_positions_go_into_the_product(scan, bundle, library, tmp_path,
                                                         monkeypatch):
    ri = convert.scan_to_reconstruct_input(scan)
    outputs, seen = _run(library, bundle, scan,
                         "refine_epochs: 3\nrefine_probe: true\nrefine_positions: true\n",
                         tmp_path, monkeypatch)
    assert len(outputs) == len(seen) == 1
    recon, product = seen[0], outputs[-1].product
    assert recon.refined_probe is not None and recon.refined_positions_px is not None
    np.testing.assert_allclose(_probe(product), recon.refined_probe, rtol=1e-6, atol=1e-7)
    assert not np.allclose(_probe(product), _probe(ri.product))
    # the chunk's patterns are in spatial order: its positions go back to their own indexes
    order = np.lexsort((scan.positions_px[:, 1], scan.positions_px[:, 0]))
    expected = np.empty_like(scan.positions_px)
    expected[order] = recon.refined_positions_px + recon.frame_offset_px
    got = _product_positions(product)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert np.abs(got - scan.positions_px).max() > 1e-3  # they did move
    assert list(product.probe_positions.get_indexes()) == list(
        ri.product.probe_positions.get_indexes())
    # the object is the refined one, on the input grid
    assert np.isfinite(np.asarray(product.object_.get_layer(0))).all()


def test_position_correction_goes_into_the_product_and_keeps_the_probe(
        scan, bundle, library, tmp_path, monkeypatch):
    ri = convert.scan_to_reconstruct_input(scan)
    outputs, seen = _run(library, bundle, scan, "position_refine_epochs: 3\n", tmp_path,
                         monkeypatch)
    recon, product = seen[0], outputs[-1].product
    order = np.lexsort((scan.positions_px[:, 1], scan.positions_px[:, 0]))
    expected = np.empty_like(scan.positions_px)
    expected[order] = recon.positions_px + recon.frame_offset_px
    np.testing.assert_allclose(_product_positions(product), expected, atol=1e-6)
    assert np.abs(expected - scan.positions_px).max() > 1e-3
    np.testing.assert_array_equal(_probe(product), _probe(ri.product))


def test_refinement_that_cannot_be_written_back_is_refused(scan, bundle, library, tmp_path):
    from ptychopinn.errors import ConfigError

    pinn = library["PINN"]
    pinn.load_model_from_file(bundle)
    ri = convert.scan_to_reconstruct_input(scan)
    cfg = tmp_path / "refine.yaml"
    cfg.write_text("refine_epochs: 2\nrefine_probe: true\n")
    library.settings.inference_config_file.set_value(str(cfg))
    library.settings.patterns_per_chunk.set_value(20)  # two chunks, two probes
    with pytest.raises(ConfigError, match=r"(?s)refine\.yaml.*refine_probe.*2 chunks.*"
                                          r"PatternsPerChunk to at least 37.*ptychopinn infer"):
        next(iter(pinn.reconstruct(ri)))
    cfg.write_text("position_refine_epochs: 3\n")
    with pytest.raises(ConfigError, match="position_refine_epochs would run on each"):
        next(iter(pinn.reconstruct(ri)))
    library.settings.patterns_per_chunk.set_value(4096)
    cfg.write_text("refine_positions: true\n")  # without refine_epochs it would do nothing
    with pytest.raises(ConfigError, match="refine_positions act during the physics"):
        next(iter(pinn.reconstruct(ri)))
    cfg.write_text("refine_epochs: 1\n")  # the object alone: fine in chunks
    library.settings.patterns_per_chunk.set_value(20)
    outputs = list(pinn.reconstruct(ri))
    assert len(outputs) == 2
    np.testing.assert_array_equal(_probe(outputs[-1].product), _probe(ri.product))
    np.testing.assert_array_equal(_product_positions(outputs[-1].product),
                                  _product_positions(ri.product))


# ------------------------------------------------------------------ 3. atomic writes
def test_save_model_into_a_folder_and_atomically(bundle, library, tmp_path, monkeypatch):
    from ptychopinn.errors import OutputPathError

    pinn = library["PINN"]
    pinn.load_model_from_file(bundle)
    folder = tmp_path / "models"
    folder.mkdir()
    pinn.save_model(folder)  # a folder gets the bundle under its standard name
    assert (folder / "model.ptychopinn.safetensors").read_bytes() == bundle.read_bytes()
    pinn.save_model(bundle)  # onto itself: nothing to do
    pinn.save_model(bundle.parent)

    target = tmp_path / "copy.ptychopinn.safetensors"
    target.write_bytes(b"the previous model")

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", disk_full)
        with pytest.raises(OSError, match="No space left"):
            pinn.save_model(target)
    assert target.read_bytes() == b"the previous model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.ptychopinn.safetensors",
                                                          "models"]
    pinn.save_model(target)
    assert target.read_bytes() == bundle.read_bytes()

    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(OutputPathError, match="afile is a file, not a folder"):
        pinn.save_model(blocker / "model.ptychopinn.safetensors")


def test_scan_to_ptychodus_paths_and_atomic_writes(scan, tmp_path, monkeypatch):
    import ptychodus.api.io as pio

    from ptychopinn.errors import OutputPathError
    from ptychopinn.integrations.ptychodus import ptychodus_to_scan, scan_to_ptychodus

    with pytest.raises(OutputPathError, match=r"product file .*is a folder.*product\.h5"):
        scan_to_ptychodus(scan, tmp_path, tmp_path / "diffraction.h5")
    with pytest.raises(OutputPathError, match="expected two files"):
        scan_to_ptychodus(scan, tmp_path / "a.h5", tmp_path / "a.h5")
    assert list(tmp_path.iterdir()) == []

    prod_p, diff_p = scan_to_ptychodus(scan, tmp_path / "product.h5",
                                       tmp_path / "diffraction.h5")
    before = prod_p.read_bytes(), diff_p.read_bytes()

    def broken(path, data, **kw):
        Path(path).write_bytes(b"half an HDF5 file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pio, "save_diffraction_data", broken)
    with pytest.raises(OSError, match="No space left"):
        scan_to_ptychodus(scan.subset(np.arange(20)), prod_p, diff_p, name="other")
    assert (prod_p.read_bytes(), diff_p.read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["diffraction.h5", "product.h5"]
    assert ptychodus_to_scan(prod_p, diff_p).n_patterns == scan.n_patterns


# ------------------------------------------------------------------ 4. settings panel and docs
def test_the_panel_shows_every_setting_with_the_configs_choices(monkeypatch):
    """Every parameter of both INI groups is in the GUI panel (Precision included), and
    the combo boxes offer exactly the config's choices. PyQt5 is not needed: Ptychodus's
    view builder is replaced by one that records what it is given."""
    from ptychodus.api.settings import SettingsRegistry

    from ptychopinn.config.schema import ExecutionConfig, InferenceConfig
    from ptychopinn.integrations.ptychodus import PtychoPINNReconstructorLibrary, launcher

    shown: dict[int, tuple] = {}

    class Builder:
        def __getattr__(self, name):
            def add(parameter, *args, **kwargs):
                shown[id(parameter)] = (name, args)
            return add

        def build_widget(self):
            return "widget"

    params = types.ModuleType("ptychodus.controller.parameters")
    params.ParameterViewBuilder = Builder
    processing = types.ModuleType("ptychodus.controller.processing")
    processing.ReconstructorViewControllerFactory = object
    monkeypatch.setitem(sys.modules, "ptychodus.controller.parameters", params)
    monkeypatch.setitem(sys.modules, "ptychodus.controller.processing", processing)
    registry = SettingsRegistry()
    library = PtychoPINNReconstructorLibrary(registry)
    assert launcher._settings_panel(library).create_view_controller("PINN") == "widget"

    for group in ("PtychoPINNNext", "PtychoPINNNextTraining"):
        for key, parameter in registry[group].parameters().items():
            assert id(parameter) in shown, f"[{group}] {key} is not in the panel"
    s = library.settings
    choices = {id(s.precision): ExecutionConfig.model_fields["precision"].annotation,
               id(s.stitch_weight): InferenceConfig.model_fields["stitch_weight"].annotation}
    for pid, annotation in choices.items():
        kind, args = shown[pid]
        assert kind == "add_combo_box"
        assert set(args[0]) == set(get_args(annotation))


def test_docs_list_the_settings_as_they_are():
    text = DOCS.read_text()
    from ptychopinn.integrations.ptychodus.launcher import STITCH_WEIGHTS

    section = text[text.index("`StitchWeight`"):text.index("`StitchFlatAbove`")]
    for choice in STITCH_WEIGHTS:
        assert f"`{choice}`" in section, choice


# ------------------------------------------------------------------ 5. logging once
def test_lightning_lines_are_logged_once_under_ptychodus(bundle, tmp_path):
    """Ptychodus configures the root logger; Lightning's lines must not print twice."""
    script = (
        "import logging, sys\n"
        "logging.basicConfig(format='ROOT %(name)s: %(message)s', stream=sys.stdout, "
        "level=logging.INFO)\n"
        "from ptychodus.api.settings import SettingsRegistry\n"
        "from ptychopinn.integrations.ptychodus import PtychoPINNReconstructorLibrary\n"
        "lib = PtychoPINNReconstructorLibrary(SettingsRegistry())\n"
        f"lib['PINN'].load_model_from_file({str(bundle)!r})\n"
        "from lightning.pytorch.utilities import rank_zero_info\n"
        "rank_zero_info('GPU available: probe line')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, MPLBACKEND="Agg"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert out.count("GPU available: probe line") == 1, out[-2000:]
    assert "ROOT lightning" in out


def test_lightning_logging_is_left_alone_without_host_logging(monkeypatch):
    from ptychopinn.integrations.ptychodus.reconstructor import route_lightning_logging

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    lg = logging.getLogger("lightning")
    handlers = list(lg.handlers)
    route_lightning_logging()
    assert lg.handlers == handlers
