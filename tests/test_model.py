"""FashionNet: head shapes from the schema, weight loading, the clear offline error."""
from __future__ import annotations

import re

import pytest
import torch

from fastfashion.schema import FASHION_SCHEMA, Attribute, Schema
from fastfashion.train.model import FashionNet, WeightsError


def test_one_head_per_attribute():
    torch.manual_seed(0)
    model = FashionNet(FASHION_SCHEMA).eval()
    out = model(torch.randn(2, 3, 32, 32))
    assert [tuple(o.shape) for o in out] == [(2, k) for k in FASHION_SCHEMA.num_classes]
    head = model.heads[0]
    assert [type(m).__name__ for m in head] == ["Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear"]
    assert head[3].p == 0.5


def test_heads_sized_from_any_schema():
    schema = Schema((Attribute("colour", ("red", "blue")), Attribute("size", ("s", "m", "l", "xl", "xxl"))))
    out = FashionNet(schema, dropout=0.1).eval()(torch.randn(1, 3, 32, 32))
    assert [o.shape[1] for o in out] == [2, 5]


def test_seeded_init_is_deterministic():
    torch.manual_seed(1)
    a = FashionNet(FASHION_SCHEMA).state_dict()
    torch.manual_seed(1)
    b = FashionNet(FASHION_SCHEMA).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_load_fashionnet_and_trunk_state_dicts(tmp_path):
    torch.manual_seed(2)
    src = FashionNet(FASHION_SCHEMA)
    torch.save(src.state_dict(), tmp_path / "full.pt")
    torch.save({"model": src.state_dict(), "epoch": 3}, tmp_path / "ckpt.pt")
    trunk = dict(src.trunk.state_dict())
    trunk["fc.weight"], trunk["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)  # like torchvision's file
    torch.save(trunk, tmp_path / "resnet18.pth")
    for name in ("full.pt", "ckpt.pt"):
        m = FashionNet(FASHION_SCHEMA, weights=tmp_path / name)
        assert all(torch.equal(v, src.state_dict()[k]) for k, v in m.state_dict().items())
    m = FashionNet(FASHION_SCHEMA, weights=str(tmp_path / "resnet18.pth"))
    assert torch.equal(m.trunk.conv1.weight, src.trunk.conv1.weight)


def test_bad_weights_raise_clear_errors(tmp_path):
    missing = tmp_path / "missing.pt"
    with pytest.raises(WeightsError, match=f"^{re.escape(f'weights file {missing} does not exist')}$"):
        FashionNet(FASHION_SCHEMA, weights=missing)
    torch.save({"trunk.nothing": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(WeightsError, match=f"^{re.escape(str(tmp_path / 'bad.pt'))} does not match this model: "
                                           r"Error\(s\) in loading state_dict for FashionNet:$"):
        FashionNet(FASHION_SCHEMA, weights=tmp_path / "bad.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(WeightsError, match=f"^{re.escape(str(tmp_path / 'list.pt'))} does not hold a state dict$"):
        FashionNet(FASHION_SCHEMA, weights=tmp_path / "list.pt")


def test_imagenet_offline_is_a_clear_error(monkeypatch, tmp_path):
    import torchvision

    def offline(*args, **kwargs):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.__class__, "get_state_dict", offline)
    with pytest.raises(WeightsError, match=r"^could not download torchvision's ImageNet ResNet-18 weights "
                                           r"\(OSError: \[Errno -3\] Temporary failure in name resolution\); "
                                           r"this machine looks offline\. Put resnet18-[0-9a-f]+\.pth in "
                                           r".*/checkpoints, or load a local ResNet-18 or FashionNet state dict "
                                           r"instead \(weights=PATH\)$"):
        FashionNet(FASHION_SCHEMA, weights="imagenet")


def test_corrupt_weights_file_is_one_clear_line(tmp_path):
    from fastfashion import FASHION_SCHEMA
    from fastfashion.train.model import FashionNet, WeightsError
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"this is not a torch file")
    with pytest.raises(WeightsError, match=f"^cannot read weights file {re.escape(str(bad))}: not a valid torch "
                                           r"file \(\w+: [^\n]*\)$") as info:
        FashionNet(FASHION_SCHEMA, weights=str(bad))
    msg = str(info.value)
    assert "garbage.pt" in msg and "not a valid torch file" in msg and "\n" not in msg
