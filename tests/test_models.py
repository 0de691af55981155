"""Models: the gradient reversal layer, backbones, and loading weights from files only."""

from __future__ import annotations

import pytest
import torch

from aal_sweep.backbones import build_backbone
from aal_sweep.errors import AalError
from aal_sweep.models import GradientReversal


@pytest.mark.parametrize("lam", [0.01, 0.3, 1.0])
def test_grl_identity_forward_reversed_scaled_gradient(lam):
    x = torch.randn(5, 3, requires_grad=True)
    w = torch.randn(5, 3)
    y = GradientReversal(lam)(x)
    assert torch.equal(y, x)
    (y * w).sum().backward()
    torch.testing.assert_close(x.grad, -lam * w)


def test_grl_in_a_network_flips_only_what_is_behind_it():
    torch.manual_seed(0)
    f = torch.nn.Linear(4, 4)
    head = torch.nn.Linear(4, 1)
    x = torch.randn(8, 4)
    head(f(x)).sum().backward()
    plain = f.weight.grad.clone()
    head_plain = head.weight.grad.clone()
    f.zero_grad(), head.zero_grad()
    head(GradientReversal(0.5)(f(x))).sum().backward()
    torch.testing.assert_close(f.weight.grad, -0.5 * plain)
    torch.testing.assert_close(head.weight.grad, head_plain)  # the head itself still minimises its loss


def test_backbones_shapes():
    for name, width in (("small_cnn", 128), ("resnet18", 512)):
        net, w = build_backbone(name)
        assert w == width and net(torch.zeros(2, 3, 32, 32)).shape == (2, width)


def test_resnet18_loads_a_state_dict_file(tmp_path):
    from torchvision.models import resnet18

    torch.manual_seed(3)
    ref = resnet18(weights=None)
    torch.save(ref.state_dict(), tmp_path / "w.pth")
    net, _ = build_backbone("resnet18", str(tmp_path / "w.pth"))
    torch.testing.assert_close(net.conv1.weight, ref.conv1.weight)


def test_bad_weight_files_are_clear(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(AalError, match="cannot load .* as a state_dict"):
        build_backbone("resnet18", str(tmp_path / "junk.pth"))
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(AalError, match="not a resnet18 state_dict"):
        build_backbone("resnet18", str(tmp_path / "other.pth"))


def test_imagenet_weights_come_from_the_local_cache_only(tmp_path, monkeypatch):
    from torchvision.models import resnet18

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # torch.hub.get_dir() -> TORCH_HOME/hub
    with pytest.raises(AalError, match=r"ImageNet weights for resnet18 not found at .*resnet18-f37072fd.pth"):
        build_backbone("resnet18", "imagenet")
    torch.manual_seed(5)
    ref = resnet18(weights=None)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(ref.state_dict(), tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    net, width = build_backbone("resnet18", "imagenet")
    assert width == 512
    torch.testing.assert_close(net.conv1.weight, ref.conv1.weight)
