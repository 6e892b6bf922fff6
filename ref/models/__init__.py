"""CIFAR-style networks of the robust-pruning papers. Each builder takes num_classes, a seed or
numpy Generator `rng`, and the options in its docstring, and returns a float32 ref.nn.Module
(`.astype(np.float64)` for double precision). Every builder also takes normalize=(mean, std), the
input normalisation inside the model (ref.models.common), so attacks work in [0, 1] pixels.

    import ref.models
    model = ref.models.resnet18(num_classes=10, rng=np.random.default_rng(0))
    model = ref.models.get("vgg16_bn", classifier="hydra")
"""
from ref.models.certified import certified_cnn, cifar_model, cifar_model_large
from ref.models.resnet import preact_resnet18, resnet18, resnet34, resnet50
from ref.models.small_cnn import small_cnn
from ref.models.vgg import vgg16_bn
from ref.models.wrn import wide_resnet, wrn_28_4, wrn_28_10

MODELS = {"small_cnn": small_cnn, "vgg16_bn": vgg16_bn, "resnet18": resnet18,
          "resnet34": resnet34, "resnet50": resnet50, "preact_resnet18": preact_resnet18,
          "wide_resnet": wide_resnet, "wrn_28_4": wrn_28_4, "wrn_28_10": wrn_28_10,
          "cifar_model": cifar_model, "cifar_model_large": cifar_model_large,
          "certified_cnn": certified_cnn}


def get(name, **kw):
    """MODELS[name](**kw)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name](**kw)


__all__ = ["MODELS", "certified_cnn", "cifar_model", "cifar_model_large", "get", "preact_resnet18",
           "resnet18", "resnet34", "resnet50", "small_cnn", "vgg16_bn", "wide_resnet", "wrn_28_10",
           "wrn_28_4"]
