"""Generator networks (PyTorch): diffraction amplitudes in, object amplitude and phase out.

``build_generator(model_cfg)`` returns the network named by
``model_cfg.architecture`` ('unet', the improved default, or 'cnn', the
original PtychoPINN baseline); ``register_generator`` adds new ones. Importing
this package does not import torch; building a generator does.
"""

from ptychopinn.models.registry import available_generators, build_generator, register_generator

__all__ = ["available_generators", "build_generator", "register_generator"]
