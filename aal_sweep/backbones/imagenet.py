"""ImageNet's per-channel mean and std on [0, 1] pixels: the normalisation of the built-in backbones, and of a
family's model whose own pretrained config names none. A leaf module: the family modules and the data
tensors import it without importing the registry (aal_sweep/backbones/__init__.py), which imports them."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
