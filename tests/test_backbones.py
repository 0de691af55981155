"""Backbones by name (aal_sweep/backbones/): timm/NAME and torchvision/NAME beside resnet18 and small_cnn.

Small real models at random init on the CPU (timm's test_resnet and test_vit, torchvision's
mobilenet_v3_small and squeezenet1_0), tiny images: their features and widths, their own normalisation
reaching the batches, weights from the local caches only, every kind of trial, resume, compile,
channels-last, bad input before Ray starts, and one sweep on the shared local Ray.
"""

from __future__ import annotations

import copy
import sys

import numpy as np
import pytest
import torch
from conftest import run_sweep, write_config

from aal_sweep.backbones import IMAGENET_MEAN, IMAGENET_STD, build_backbone, check_backbone, normalisation
from aal_sweep.cli import main
from aal_sweep.config import load_config, parse_config
from aal_sweep.errors import AalError
from aal_sweep.kinds import ADVERSARIAL_MULTIPLE, ADVERSARIAL_SHARED, MULTITASK_ALL
from aal_sweep.train import TrainSpec, fit

TIMM, TORCHVISION = "timm/test_resnet", "torchvision/mobilenet_v3_small"  # both take 16x16 images
ATTRS = ("Disc", "Square", "Triangle")


@pytest.fixture(scope="module")
def data(tiny_root, tmp_path_factory):
    from aal_sweep.data.cache import open_decoded

    return open_decoded(tiny_root, (16, 16), tmp_path_factory.mktemp("cache"))


def spec(backbone: str, kind: str = "single", attributes=ATTRS[:1], **kw) -> TrainSpec:
    base = dict(
        kind=kind,
        attributes=tuple(attributes),
        backbone=backbone,
        epochs=1,
        batch_size=32,
        lr=3e-3,
        lr_milestones=(),
        device="cpu",
        num_threads=1,
        compile=False,
    )
    return TrainSpec(**(base | kw))


# ---- names, features, widths, normalisation ---------------------------------------------------------------


def test_existing_backbones_keep_their_training_hash():
    # the hashes main gave these configs before backbones had families (training results stay too: the
    # built-in backbones build, seed and normalise exactly as before)
    small = {"name": "t", "dataset": {"root": "/x", "image_size": [16, 16]}, "model": {"backbone": "small_cnn"}}
    resnet = {"name": "t", "dataset": {"root": "/x"}, "model": {"backbone": "resnet18", "pretrained": "imagenet"}}
    assert parse_config(small, check_files=False).training_hash() == "e034dbd03e"
    assert parse_config(resnet, check_files=False).training_hash() == "bfb1769b5c"
    other = copy.deepcopy(small)
    other["model"]["backbone"] = TIMM
    assert parse_config(other, check_files=False).training_hash() != "e034dbd03e"


@pytest.mark.parametrize(
    "name,size",
    [
        ("timm/test_resnet", 16),
        ("timm/test_vit", 16),
        ("timm/mobilenetv3_small_050", 32),  # a pre-logits layer: wider than its num_features
        ("torchvision/mobilenet_v3_small", 16),
        ("torchvision/squeezenet1_0", 32),  # its classifier is a 1x1 convolution
    ],
)
def test_family_backbones_return_features_of_their_width(name, size):
    torch.manual_seed(0)
    net, width = build_backbone(name)
    x = torch.randn(2, 3, size, size)
    out = net.train()(x)  # training mode, as a trial calls it
    assert out.shape == (2, width) and width not in (0, 1000)
    assert not any(p.shape[0] == 1000 for p in net.parameters()), "an ImageNet classifier is left"


@pytest.mark.parametrize("name", ["torchvision/mobilenet_v3_small", "torchvision/squeezenet1_0"])
def test_torchvision_features_are_what_its_classifier_reads(name):
    from torchvision.models import get_model

    torch.manual_seed(3)
    net, width = build_backbone(name)
    torch.manual_seed(3)
    full = get_model(name.partition("/")[2], weights=None).eval()
    classifier = [m for m in full.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))][-1]
    seen = []
    classifier.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    x = torch.randn(2, 3, 32, 32)
    full(x)
    features = net.eval()(x)
    # squeezenet's classifier reads a feature map: then ReLU and average pooling follow the removed layer
    torch.testing.assert_close(features, seen[0].relu().mean((2, 3)) if seen[0].ndim == 4 else seen[0])
    assert width == features.shape[1]


def test_normalisation_is_the_models_own():
    assert normalisation("small_cnn") == normalisation("resnet18") == (IMAGENET_MEAN, IMAGENET_STD)
    assert normalisation("torchvision/resnet18") == (IMAGENET_MEAN, IMAGENET_STD)
    assert normalisation("torchvision/efficientnet_v2_l") == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    from timm.data import resolve_data_config

    for name in ("test_resnet", "resnet10t"):  # timm's own reading of its pretrained config
        cfg = resolve_data_config({}, model=build_backbone(f"timm/{name}")[0])
        assert normalisation(f"timm/{name}") == (tuple(cfg["mean"]), tuple(cfg["std"]))
    assert normalisation("timm/test_resnet") == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


@pytest.mark.parametrize("backbone", [TIMM, "small_cnn"])
def test_training_batches_are_normalised_for_the_backbone(data, backbone):
    """Every training image once per epoch: the per-channel sum of the batches fit trains on is that of the
    split's pixels normalised with the backbone's mean and std (a flip does not change it)."""
    total = torch.zeros(3, dtype=torch.float64)
    fit(spec(backbone), data, before_step=lambda model, x, y: total.add_(x.double().sum((0, 2, 3))))
    mean, std = (np.array(v).reshape(1, 1, 1, 3) for v in normalisation(backbone))
    want = ((data.images["train"] / 255.0 - mean) / std).sum((0, 1, 2))
    np.testing.assert_allclose(total.numpy(), want, rtol=1e-4)


# ---- weights: local caches and files only --------------------------------------------------------------


def _hf_cache_entry(cache, repo_id: str, state: dict) -> None:
    """A Hugging Face hub cache entry as `hf download` leaves it: refs/main naming a snapshot folder."""
    from safetensors.torch import save_file

    folder = cache / f"models--{repo_id.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0123abcd")
    (folder / "snapshots" / "0123abcd").mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, folder / "snapshots" / "0123abcd" / "model.safetensors")


def test_timm_imagenet_weights_come_from_the_hub_cache_only(tmp_path, monkeypatch):
    import timm

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    want = "model.safetensors of the Hugging Face repo timm/test_resnet.r160_in1k in the hub cache"
    (problem,) = check_backbone(TIMM, "imagenet", (16, 16))
    assert want in problem and str(tmp_path / "hf") in problem and "\n" not in problem
    with pytest.raises(AalError, match=want):
        build_backbone(TIMM, "imagenet")
    torch.manual_seed(5)
    ref = timm.create_model("test_resnet", num_classes=1000)  # a full model, classifier included, as timm ships
    _hf_cache_entry(tmp_path / "hf", "timm/test_resnet.r160_in1k", ref.state_dict())
    assert check_backbone(TIMM, "imagenet", (16, 16)) == []
    net, width = build_backbone(TIMM, "imagenet")
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, ref.state_dict()[k])
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(net.eval()(x), ref.eval().forward_head(ref.forward_features(x), pre_logits=True))


def test_timm_weights_from_a_file_and_a_file_of_another_model(tmp_path):
    import timm

    torch.manual_seed(6)
    ref = timm.create_model("test_resnet", num_classes=7)  # fine-tuned elsewhere: another classifier
    torch.save(ref.state_dict(), tmp_path / "mine.pth")
    net, _ = build_backbone(TIMM, str(tmp_path / "mine.pth"))
    torch.testing.assert_close(net.state_dict()["conv1.0.weight"], ref.state_dict()["conv1.0.weight"])
    torch.save(timm.create_model("test_vit").state_dict(), tmp_path / "vit.pth")
    with pytest.raises(AalError, match=r"'.*vit.pth' is not a timm/test_resnet state_dict \(missing"):
        build_backbone(TIMM, str(tmp_path / "vit.pth"))


def test_torchvision_imagenet_weights_come_from_the_torch_cache_only(tmp_path, monkeypatch):
    from torchvision.models import get_model

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    want = (
        r"ImageNet weights for torchvision/mobilenet_v3_small \(MobileNet_V3_Small_Weights.IMAGENET1K_V1\) not "
        r"found at .*/hub/checkpoints/mobilenet_v3_small-047dcff4.pth \(copy mobilenet_v3_small-047dcff4.pth there"
    )
    with pytest.raises(AalError, match=want):
        build_backbone(TORCHVISION, "imagenet")
    assert len(check_backbone(TORCHVISION, "imagenet", (16, 16))) == 1
    torch.manual_seed(7)
    ref = get_model("mobilenet_v3_small", weights=None)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(ref.state_dict(), tmp_path / "hub" / "checkpoints" / "mobilenet_v3_small-047dcff4.pth")
    net, width = build_backbone(TORCHVISION, "imagenet")
    assert width == 1024 and check_backbone(TORCHVISION, "imagenet", (16, 16)) == []
    torch.testing.assert_close(net.features[0][0].weight, ref.features[0][0].weight)


def test_planning_names_the_weights_it_could_not_check(tmp_path, tiny_root, monkeypatch):
    from aal_sweep.config import unchecked_files

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    path = write_config(tmp_path / "c.yaml", tiny_root, model={"backbone": TIMM, "pretrained": "imagenet"})
    cfg = load_config(path, check_files="annotations")  # a plan before the weights are there
    (line,) = [u for u in unchecked_files(cfg) if "ImageNet weights" in u]
    assert line.startswith("not checked: model.pretrained: ImageNet weights for timm/test_resnet")


# ---- every kind of trial, resume, compile, channels-last ------------------------------------------------------


@pytest.mark.parametrize("backbone", [TIMM, TORCHVISION])
def test_every_kind_of_trial_trains_with_the_backbone(data, backbone, tmp_path):
    from aal_sweep.train.lookahead import lookahead_affinity
    from aal_sweep.train.variants import weights_bytes

    runs = {
        "single": spec(backbone),
        "pair": spec(backbone, "pair", ATTRS[:2]),
        **{
            f"adversarial-{m}": spec(backbone, "adversarial", ATTRS[:2], method=m, lam=0.3)
            for m in ("grl", "gan", "wgan")
        },
        ADVERSARIAL_MULTIPLE: spec(backbone, ADVERSARIAL_MULTIPLE, ATTRS, lam=0.3),
    }
    for name, s in runs.items():
        r = fit(s, data)
        assert [h.attribute for h in r.heads] == list(s.evaluated()), name
        assert all(0 <= h.val_acc <= 1 for h in r.heads) and np.isfinite(r.history["train_loss"]).all(), name
    states = []
    mt = fit(spec(backbone, MULTITASK_ALL, ATTRS), data, lambda st, m: states.append(weights_bytes(st["model"])))
    assert len(mt.heads) == 3
    (tmp_path / "mt.pt").write_bytes(states[-1])
    shared = fit(spec(backbone, ADVERSARIAL_SHARED, ATTRS[:2], lam=0.3, init_weights=str(tmp_path / "mt.pt")), data)
    assert [h.attribute for h in shared.heads] == ["Disc"]
    la = lookahead_affinity(spec(backbone, MULTITASK_ALL, ATTRS), data, every=2)
    assert la.steps > 0 and np.isfinite(la.affinity.to_numpy()).all() and len(la.estimates) == 6


def test_resume_equals_uninterrupted_with_a_timm_backbone(data):
    s = spec(TIMM, "adversarial", ATTRS[:2], method="grl", lam=0.5, epochs=3)
    full = fit(s, data)
    states = {}
    fit(s, data, on_epoch=lambda st, m: states.setdefault(st["epoch"], copy.deepcopy(st)))
    resumed = fit(s, data, state=states[0])
    assert resumed.heads[0].val_acc_by_epoch == full.heads[0].val_acc_by_epoch
    assert resumed.history["train_loss"] == full.history["train_loss"]


@pytest.mark.parametrize("backbone", [TIMM, TORCHVISION])
def test_channels_last_gives_the_same_features(backbone):
    # what build_model does on CUDA (model and batches channels-last), here on the CPU
    torch.manual_seed(0)
    net, _ = build_backbone(backbone)
    net.eval()
    x = torch.randn(4, 3, 16, 16)
    plain = net(x)
    last = net.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(last, plain, rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # minutes with a cold inductor cache: not for test-fast
def test_compiled_timm_training_matches_eager(data):
    # Pays a cold inductor compile of test_resnet's training and evaluation graphs: 7 minutes on the loaded
    # 2-core dev machine (2026-12-07), seconds once inductor's cache holds them
    eager, compiled = fit(spec(TIMM, epochs=2), data), fit(spec(TIMM, epochs=2, compile=True), data)
    assert compiled.history["compiled"] and not eager.history["compiled"]
    np.testing.assert_allclose(compiled.history["train_loss"], eager.history["train_loss"], rtol=1e-3)


# ---- bad input: one line, exit 2, before Ray starts, nothing written ---------------------------------------


BAD = [
    (
        {"backbone": "timm/convnxt_tiny"},
        "model.backbone: timm/convnxt_tiny: timm 1",
        "did you mean timm/convnext_tiny",
    ),
    (
        {"backbone": "timm/resnet10t.nosuch"},
        "timm has no pretrained tag 'nosuch' for resnet10t",
        "(valid: c3_in1k)",
    ),
    (
        {"backbone": "torchvision/resnt50"},
        "model.backbone: torchvision/resnt50 is not a torchvision classification model",
        "torchvision.models.list_models(torchvision.models)",
    ),
    (
        {"backbone": "convnext_tiny"},
        "model.backbone: 'convnext_tiny' is not one of resnet18, small_cnn, timm/NAME, torchvision/NAME",
        "e.g. timm/convnext_tiny",
    ),
    (
        {"backbone": "timm/test_vit", "pretrained": "imagenet"},
        "ImageNet weights for timm/test_vit are not in the local caches",
        "model.safetensors of the Hugging Face repo timm/test_vit.r160_in1k",
    ),
    (
        {"backbone": "resnet18", "pretrained": "imagenet"},
        "ImageNet weights for resnet18 not found at",
        "resnet18-f37072fd.pth",
    ),
    (
        {"backbone": "torchvision/squeezenet1_0"},
        "torchvision/squeezenet1_0 does not take dataset.image_size [16, 16] images",
        "its pretrained weights take 224x224",
    ),
]


@pytest.mark.parametrize("model,first,second", BAD, ids=[m["backbone"] for m, _, _ in BAD])
def test_bad_backbones_are_one_line_before_ray_starts(tmp_path, tiny_root, capsys, monkeypatch, model, first, second):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cfg = write_config(tmp_path / "c.yaml", tiny_root, model={"pretrained": None} | model)
    assert main(["run", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert first in err and second in err and err.count("\n") == 1
    assert not (tmp_path / "results").exists() and not (tmp_path / "cache").exists()
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


def test_timm_not_installed_is_one_line_naming_the_extra(tmp_path, tiny_root, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # what Python does for a package that is not there
    cfg = write_config(tmp_path / "c.yaml", tiny_root, model={"backbone": TIMM, "pretrained": None})
    assert main(["run", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "model.backbone: timm/ backbones need timm, which is not installed: pip install 'aal_sweep[timm]'" in err
    assert err.count("\n") == 1 and not (tmp_path / "results").exists()
    with pytest.raises(AalError, match=r"pip install 'aal_sweep\[timm\]'"):
        build_backbone(TIMM)  # a worker without timm: the trial's error says the same


# ---- one sweep on the shared local Ray ---------------------------------------------------------------------


@pytest.mark.slow
def test_a_sweep_with_a_timm_backbone(ray_local, tiny_root, tmp_path):
    from aal_sweep import open_results

    dataset = {"root": str(tiny_root), "attributes": list(ATTRS), "image_size": [16, 16]}
    dataset["cache"] = str(tmp_path / "cache")
    path = write_config(
        tmp_path / "c.yaml",
        tiny_root,
        dataset=dataset,
        model={"backbone": TIMM, "pretrained": None},
        train={"epochs": 1, "batch_size": 32, "lr": 3e-3, "lr_milestones": [], "seed": 0},
        adversarial={"method": "grl", "lambdas": [0.5]},
    )
    cfg = load_config(path)
    assert run_sweep(cfg) == 0
    res = open_results(cfg.results)
    trials = res.trials()
    assert set(trials["status"]) == {"ok"} and set(trials["backbone"]) == {TIMM}
    assert {"single", "pair"} <= set(trials["kind"]) <= {"single", "pair", "adversarial"}
    assert res.matrix("val_acc").shape == (3, 3) and set(ATTRS) <= set(res.partners()["attribute"])
