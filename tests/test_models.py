"""Tests of the generator networks and their registry (ptychopinn.models)."""

from __future__ import annotations

import math

import pytest
import torch

from ptychopinn.config import ModelConfig
from ptychopinn.errors import ConfigError
from ptychopinn.models import available_generators, build_generator, register_generator
from ptychopinn.models import registry as registry_mod
from ptychopinn.models.blocks import SpatialMixer
from ptychopinn.models.cnn import encoder_filters
from ptychopinn.models.heads import AMP_ACTIVATIONS, AmplitudeHead, PhaseHead, centre_pad
from ptychopinn.models.unet import UNetGenerator

ARCHS = ("cnn", "unet")


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny networks: one thread is fastest and immune to OpenMP oversubscription stalls.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _cfg(**kw) -> ModelConfig:
    kw.setdefault("n_filters_scale", 0.25)
    kw.setdefault("prior_iterations", 0)  # generator-level tests feed diffraction-like input
    return ModelConfig(**kw)


def _input(b: int, c: int, n: int, seed: int = 0) -> torch.Tensor:
    """Diffraction-like input: positive, bright centre, O(1)."""
    g = torch.Generator().manual_seed(seed)
    k = torch.arange(n) - n // 2
    r2 = (k[:, None] ** 2 + k[None, :] ** 2).float()
    envelope = 4.0 * torch.exp(-r2 / (2 * (n / 8) ** 2)) + 0.1
    return (envelope * torch.rand(b, c, n, n, generator=g)).float()


def _build(seed: int = 0, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_generator(_cfg(**kw))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("n", (32, 64, 128))
@pytest.mark.parametrize("gridsize", (1, 2, 3))
def test_output_shapes_and_ranges(arch: str, n: int, gridsize: int) -> None:
    net = _build(architecture=arch, N=n, gridsize=gridsize)
    c = gridsize**2
    amp, phase = net(_input(2, c, n))
    for out in (amp, phase):
        assert out.shape == (2, c, n, n)
        assert out.dtype == torch.float32
        assert torch.isfinite(out).all()
    assert (amp >= 0).all()
    assert (phase.abs() < math.pi).all()


@pytest.mark.parametrize("arch", ARCHS)
def test_n256_shape(arch: str) -> None:
    net = _build(architecture=arch, N=256, gridsize=1, n_filters_scale=0.0625)
    amp, phase = net(_input(1, 1, 256))
    assert amp.shape == phase.shape == (1, 1, 256, 256)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("n", (32, 64))
def test_pad_object_zero_outside_central_box(arch: str, n: int) -> None:
    net = _build(architecture=arch, N=n, gridsize=2, pad_object=True)
    amp, phase = net(_input(2, 4, n))
    assert amp.shape == phase.shape == (2, 4, n, n)
    inside = torch.zeros(n, n, dtype=torch.bool)
    inside[n // 4 : 3 * n // 4, n // 4 : 3 * n // 4] = True
    assert (amp[..., ~inside] == 0).all() and (phase[..., ~inside] == 0).all()
    assert (amp[..., inside] > 0).all()  # sigmoid head: strictly positive where predicted
    assert (phase[..., inside] != 0).any()


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("pad_object", (False, True))
def test_gradients_reach_every_parameter(arch: str, pad_object: bool) -> None:
    net = _build(architecture=arch, N=32, gridsize=2, pad_object=pad_object)
    amp, phase = net(_input(2, 4, 32))
    ((amp - 0.3) ** 2).mean().add((phase - 0.2).pow(2).mean()).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_registry_lists_builtins_and_rejects_unknown_names() -> None:
    assert {"cnn", "unet"} <= set(available_generators())
    bad = ModelConfig().model_copy(update={"architecture": "transformer"})
    with pytest.raises(ConfigError, match=r"transformer.*cnn.*unet"):
        build_generator(bad)


def test_register_generator_adds_an_architecture(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_mod, "_REGISTRY", dict(registry_mod._REGISTRY))

    @register_generator("toy")
    class Toy(torch.nn.Module):
        def __init__(self, cfg: ModelConfig) -> None:
            super().__init__()
            self.n = cfg.N

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x.abs(), torch.zeros_like(x)

    assert "toy" in available_generators()
    net = build_generator(ModelConfig(N=32).model_copy(update={"architecture": "toy"}))
    assert isinstance(net, Toy) and net.n == 32
    with pytest.raises(ValueError, match="already registered"):

        @register_generator("cnn")
        class Other(torch.nn.Module):
            pass


@pytest.mark.parametrize("arch", ARCHS)
def test_n_filters_scale_changes_parameter_count(arch: str) -> None:
    counts = [
        sum(p.numel() for p in _build(architecture=arch, N=64, n_filters_scale=s).parameters())
        for s in (0.5, 1.0, 2.0)
    ]
    assert counts[0] < counts[1] < counts[2]
    assert counts[2] > 3 * counts[1] > 9 * counts[0] * 0.8  # conv weights grow ~ scale**2


@pytest.mark.parametrize("n", (32, 64, 128, 256))
def test_cnn_bottleneck_is_8x8(n: int) -> None:
    net = _build(architecture="cnn", N=n, gridsize=1, n_filters_scale=0.0625)
    seen: list[tuple[int, ...]] = []
    net.encoder.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape)))
    net(_input(1, 1, n))
    assert net.bottleneck_size == 8
    assert seen[0][-2:] == (8, 8)
    assert len(net.encoder) == int(math.log2(n // 8))


def test_cnn_filters_follow_the_original() -> None:
    assert encoder_filters(64, 1.0) == [32, 64, 128]
    assert encoder_filters(128, 1.0) == [16, 32, 64, 128]
    assert encoder_filters(256, 1.0) == [8, 16, 32, 64, 128]
    assert encoder_filters(32, 1.0) == [64, 128]
    assert encoder_filters(64, 2.0) == [64, 128, 256]
    net = _build(architecture="cnn", N=64, gridsize=2, n_filters_scale=1.0)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert not any(isinstance(m, torch.nn.modules.batchnorm._NormBase) for m in net.modules())
    assert convs[0].in_channels == 4 and convs[0].out_channels == 32


@pytest.mark.parametrize("n", (32, 64, 128))
def test_unet_bottleneck_is_8x8(n: int) -> None:
    net = _build(architecture="unet", N=n, gridsize=1)
    seen: list[tuple[int, ...]] = []
    net.mixer.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape)))
    net(_input(1, 1, n))
    assert net.bottleneck_size == 8 and seen[0][-2:] == (8, 8)


@pytest.mark.parametrize("norm", ("none", "group", "batch"))
@pytest.mark.parametrize("mixer", (False, True))
def test_unet_options_build_and_run(norm: str, mixer: bool) -> None:
    torch.manual_seed(0)
    net = UNetGenerator(_cfg(N=32), norm=norm, mixer=mixer, skips=not mixer)
    amp, phase = net(_input(2, 4, 32))
    assert amp.shape == phase.shape == (2, 4, 32, 32)
    assert isinstance(net.mixer, SpatialMixer) == mixer
    has_norm = any(
        isinstance(m, torch.nn.GroupNorm | torch.nn.BatchNorm2d) for m in net.down.modules()
    )
    assert has_norm == (norm != "none")
    with pytest.raises(ConfigError, match="norm"):
        UNetGenerator(_cfg(N=32), norm="layer")


@pytest.mark.parametrize("arch", ARCHS)
def test_output_depends_on_the_input_scale(arch: str) -> None:
    # The absolute diffraction intensity carries the object's transmission: a
    # generator must not be scale invariant (as per-sample normalisation would make it).
    net = _build(architecture=arch, N=32, gridsize=1)
    x = _input(2, 1, 32)
    with torch.no_grad():
        a1, _ = net(x)
        a2, _ = net(2.0 * x)
    assert (a1 - a2).abs().max() > 1e-3


def test_bad_n_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="N"):
        build_generator(ModelConfig.model_construct(**{**ModelConfig().model_dump(), "N": 48}))


@pytest.mark.parametrize("arch", ARCHS)
def test_deterministic_with_fixed_seed(arch: str) -> None:
    x = _input(2, 4, 32)
    a1, p1 = _build(seed=3, architecture=arch, N=32)(x)
    a2, p2 = _build(seed=3, architecture=arch, N=32)(x)
    a3, _ = _build(seed=4, architecture=arch, N=32)(x)
    assert torch.equal(a1, a2) and torch.equal(p1, p2)
    assert not torch.equal(a1, a3)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("activation", AMP_ACTIVATIONS)
def test_initial_amplitude_about_0p6_and_phase_near_zero(arch: str, activation: str) -> None:
    net = _build(architecture=arch, N=32, amp_activation=activation, n_filters_scale=0.5)
    with torch.no_grad():
        amp, phase = net(_input(4, 4, 32))
    assert 0.5 < float(amp.mean()) < 0.7
    assert float(phase.abs().mean()) < 0.3


@pytest.mark.parametrize("activation", AMP_ACTIVATIONS)
def test_heads_bounds_under_extreme_inputs(activation: str) -> None:
    torch.manual_seed(0)
    amp_head, phase_head = AmplitudeHead(3, 2, activation), PhaseHead(3, 2)
    x = torch.randn(2, 3, 8, 8) * 1e4
    with torch.no_grad():
        amp, phase = amp_head(x), phase_head(x)
    assert torch.isfinite(amp).all() and (amp >= 0).all()
    assert (phase.abs() < math.pi).all() and phase.abs().max() > 3.1
    with pytest.raises(ConfigError, match="amp_activation"):
        AmplitudeHead(3, 2, "tanh")


def test_centre_pad_places_the_map_in_the_middle() -> None:
    x = torch.arange(4.0).reshape(1, 1, 2, 2) + 1
    y = centre_pad(x, 4)
    assert y.shape == (1, 1, 4, 4)
    assert torch.equal(y[0, 0, 1:3, 1:3], x[0, 0]) and y.sum() == x.sum()


@pytest.mark.parametrize("arch", ARCHS)
def test_learns_a_fixed_tiny_batch(arch: str) -> None:
    torch.manual_seed(0)
    net = build_generator(_cfg(architecture=arch, N=32, gridsize=1))
    x = _input(2, 1, 32, seed=1)
    g = torch.Generator().manual_seed(2)
    k = torch.linspace(-1, 1, 32)
    smooth = torch.sin(3 * k[:, None] + 2 * k[None, :])
    amp_t = 0.5 + 0.3 * smooth * torch.rand(2, 1, 1, 1, generator=g)
    phase_t = 0.8 * smooth.T * torch.rand(2, 1, 1, 1, generator=g)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)

    def loss_fn() -> torch.Tensor:
        amp, phase = net(x)
        return ((amp - amp_t) ** 2).mean() + ((phase - phase_t) ** 2).mean()

    with torch.no_grad():
        first = float(loss_fn())
    for _ in range(100):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
    with torch.no_grad():
        last = float(loss_fn())
    assert last < 0.2 * first, (first, last)
