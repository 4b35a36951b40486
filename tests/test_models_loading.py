"""Checkpoint loading in every accepted format, robustseg's own format, clear errors, and attack mode."""
from __future__ import annotations

import argparse
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import resnet50
from torchvision.models.detection import MaskRCNN, maskrcnn_resnet50_fpn_v2
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops.misc import FrozenBatchNorm2d

from robustseg.cli import main as cli_main
from robustseg.data.coco import CocoDataset
from robustseg.data.synth import CATEGORIES
from robustseg.errors import CheckpointError, RobustsegError
from robustseg.models import attack_mode, build_model, load_model, save_checkpoint

# Small inference settings so the R50 models run fast on a CPU. box_score_thresh=0 makes an untrained model return
# detections (its class scores are ~uniform), so the comparisons below compare real outputs, not empty tensors.
R50_OPTS = {"min_size": 128, "max_size": 128, "box_score_thresh": 0.0, "box_detections_per_img": 20}
OUTPUT_KEYS = ("boxes", "scores", "labels", "masks")
LOSS_KEYS = {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}


def _image(seed: int = 0, h: int = 96, w: int = 120) -> torch.Tensor:
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def _outputs(model: nn.Module, img: torch.Tensor) -> dict:
    model.eval()
    return model([img])[0]


def _assert_same_outputs(ref: dict, got: dict) -> None:
    assert len(ref["boxes"]) > 0, "reference model produced no detections: the comparison would be vacuous"
    for k in OUTPUT_KEYS:
        assert got[k].dtype == ref[k].dtype, k
        assert torch.equal(got[k], ref[k]), f"{k} differs after loading"


def _randomise_norm_buffers(model: nn.Module, seed: int) -> None:
    """Give every (Frozen)BatchNorm non-default affine params and running stats, so loading them is tested."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (FrozenBatchNorm2d, nn.BatchNorm2d)):
                n = m.running_mean.numel()
                m.weight.copy_(1 + 0.1 * torch.randn(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
                if isinstance(m, nn.BatchNorm2d):
                    m.num_batches_tracked.fill_(int(torch.randint(1, 1000, (), generator=g)))


def _one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert isinstance(excinfo.value, RobustsegError)
    assert msg and "\n" not in msg, f"error message is not one line: {msg!r}"
    return msg


# --------------------------------------------------------------------------------------------------------------
# torchvision R50-FPN v1 / v2 files


@pytest.fixture(scope="module")
def r50_v1():
    """A random-init maskrcnn_resnet50_fpn built exactly as torchvision builds it for its COCO weights."""
    torch.manual_seed(11)
    trunk = resnet50(norm_layer=FrozenBatchNorm2d)
    model = MaskRCNN(_resnet_fpn_extractor(trunk, 3), num_classes=91, **R50_OPTS).eval()
    _randomise_norm_buffers(model, 12)
    img = _image(1)
    return model, img, _outputs(model, img)


@pytest.fixture(scope="module")
def r50_v2():
    torch.manual_seed(21)
    model = maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=5, **R50_OPTS).eval()
    _randomise_norm_buffers(model, 22)
    img = _image(2)
    return model, img, _outputs(model, img)


def _write_v1(kind: str, model: nn.Module, path: Path) -> None:
    sd = model.state_dict()
    if kind == "state_dict":
        torch.save(sd, path)
    elif kind == "reference":  # what torchvision's references/detection/train.py writes
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.02, momentum=0.9)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[16, 22], gamma=0.1)
        args = argparse.Namespace(model="maskrcnn_resnet50_fpn", lr=0.02, epochs=26, batch_size=2,
                                  data_path="/datasets/coco", weights=None, amp=False)
        torch.save({"model": sd, "optimizer": opt.state_dict(), "lr_scheduler": sched.state_dict(),
                    "epoch": 3, "args": args}, path)
    elif kind == "ddp":
        torch.save({"module." + k: v for k, v in sd.items()}, path)
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize("kind,fmt", [("state_dict", "torchvision-state-dict"),
                                      ("reference", "torchvision-reference"),
                                      ("ddp", "torchvision-state-dict")])
def test_r50_v1_files_load_bit_identical(r50_v1, tmp_path, kind, fmt):
    model, img, ref = r50_v1
    path = tmp_path / f"v1_{kind}.pth"
    _write_v1(kind, model, path)
    lm = load_model(path, **R50_OPTS)
    path.unlink()  # 170 MB
    assert lm.arch == "maskrcnn_resnet50_fpn"
    assert lm.source_format == fmt
    assert not lm.model.training
    # 91-slot torchvision COCO label space: label == COCO category id, real COCO names
    assert lm.num_classes == 91
    assert lm.class_names[0] == "person" and lm.category_ids[0] == 1
    assert len(lm.class_names) == len(lm.category_ids) == 90 and lm.category_ids[-1] == 90
    # the loaded model keeps the file's normalisation buffers exactly
    for m_ref, m_got in zip((m for m in model.modules() if isinstance(m, FrozenBatchNorm2d)),
                            (m for m in lm.model.modules() if isinstance(m, FrozenBatchNorm2d))):
        assert m_got.eps == m_ref.eps
    _assert_same_outputs(ref, _outputs(lm.model, img))


def test_r50_v2_state_dict_loads_bit_identical(r50_v2, tmp_path):
    model, img, ref = r50_v2
    path = tmp_path / "v2.pth"
    torch.save(model.state_dict(), path)
    lm = load_model(path, **R50_OPTS)
    path.unlink()
    assert lm.arch == "maskrcnn_resnet50_fpn_v2"
    assert lm.num_classes == 5  # inferred from the predictor weights
    assert lm.category_ids == [1, 2, 3, 4] and len(lm.class_names) == 4
    assert not lm.model.training
    bn_ref = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    bn_got = [m for m in lm.model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bn_ref) == len(bn_got) > 0 and not any(m.training for m in bn_got)
    for a, b in zip(bn_ref, bn_got):
        assert torch.equal(a.running_mean, b.running_mean) and torch.equal(a.running_var, b.running_var)
    _assert_same_outputs(ref, _outputs(lm.model, img))


def test_official_v1_bn_eps_survives_saving_a_loaded_model(r50_v1, tmp_path, monkeypatch):
    """torchvision's COCO v1 weights run with FrozenBatchNorm eps=0; a model loaded from them and saved in robustseg's
    format (what fine-tuning with --init does) must load again with the eps it was used and trained with."""
    import robustseg.models.checkpoint as ckpt
    from robustseg.fileio import sha256_file
    model, img, _ = r50_v1
    official = tmp_path / "maskrcnn_resnet50_fpn_coco.pth"
    torch.save(model.state_dict(), official)
    monkeypatch.setattr(ckpt, "_TV_COCO_V1_SHA", sha256_file(official)[:8])  # pretend it is the official file
    lm = load_model(official, **R50_OPTS)
    official.unlink()
    frozen = [m for m in lm.model.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert frozen and all(m.eps == 0.0 for m in frozen)
    ref = _outputs(lm.model, img)
    saved = save_checkpoint(tmp_path / "finetuned.pt", lm.model, arch=lm.arch, arch_cfg=lm.arch_cfg,
                            class_names=lm.class_names, category_ids=lm.category_ids)
    again = load_model(saved)
    saved.unlink()
    assert all(m.eps == 0.0 for m in again.model.modules() if isinstance(m, FrozenBatchNorm2d)), \
        "FrozenBatchNorm eps=0 of the official weights is lost when the model is saved and loaded again"
    _assert_same_outputs(ref, _outputs(again.model, img))


# --------------------------------------------------------------------------------------------------------------
# robustseg's own format


def test_robustseg_format_round_trip(tmp_path):
    torch.manual_seed(5)
    cfg = {"fpn_channels": 32, "box_head_dim": 64, "mask_head_channels": 16}
    model = build_model("tiny", 4, **cfg).eval()
    _randomise_norm_buffers(model, 6)
    img = _image(3, 64, 80)
    ref = _outputs(model, img)
    names, cats, meta = ["cat", "dog", "bird"], [17, 3, 90], {"iteration": 123, "note": "x"}
    path = save_checkpoint(tmp_path / "m.pt", model, arch="tiny", arch_cfg=cfg, class_names=names,
                           category_ids=cats, meta=meta)
    lm = load_model(path)
    assert (lm.arch, lm.arch_cfg, lm.class_names, lm.category_ids, lm.meta) == ("tiny", cfg, names, cats, meta)
    assert lm.source_format == "robustseg-checkpoint" and lm.num_classes == 4 and not lm.model.training
    sd_ref, sd_got = model.state_dict(), lm.model.state_dict()
    assert sd_ref.keys() == sd_got.keys() and all(torch.equal(sd_ref[k], sd_got[k]) for k in sd_ref)
    _assert_same_outputs(ref, _outputs(lm.model, img))
    # inference overrides change options, not weights, and are recorded
    lm2 = load_model(path, min_size=96, max_size=96)
    assert lm2.arch_cfg == {**cfg, "min_size": 96, "max_size": 96}
    assert lm2.model.transform.min_size == (96,) and lm2.model.transform.max_size == 96


def test_half_checkpoint_stores_fp16_and_loads_fp32(tmp_path):
    torch.manual_seed(7)
    model = build_model("tiny", 4).eval()
    full = save_checkpoint(tmp_path / "full.pt", model, arch="tiny", arch_cfg={}, class_names=["a", "b", "c"],
                           category_ids=[1, 2, 3])
    half = save_checkpoint(tmp_path / "half.pt", model, arch="tiny", arch_cfg={}, class_names=["a", "b", "c"],
                           category_ids=[1, 2, 3], half=True)
    raw = torch.load(half, weights_only=True)["state_dict"]
    floats = [v for v in raw.values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    assert raw["backbone.body.stem.1.num_batches_tracked"].dtype == torch.int64
    assert half.stat().st_size < 0.6 * full.stat().st_size
    lm = load_model(half)
    for k, v in lm.model.state_dict().items():
        orig = model.state_dict()[k]
        if orig.is_floating_point():
            assert v.dtype == torch.float32
            assert torch.equal(v, orig.half().float()), k
        else:
            assert torch.equal(v, orig), k


# --------------------------------------------------------------------------------------------------------------
# errors: always a one-line CheckpointError


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(CheckpointError) as e:
        load_model(tmp_path / "nope.pt")
    assert "no such file" in _one_line_error(e)
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError) as e:
        load_model(tmp_path / "empty.pt")
    assert "empty" in _one_line_error(e)
    with pytest.raises(CheckpointError):
        load_model(tmp_path)  # a directory is not a checkpoint file


def test_truncated_file(tmp_path, tiny_checkpoint):
    data = tiny_checkpoint.read_bytes()
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as e:
        load_model(bad)
    assert str(bad) in _one_line_error(e)


@pytest.mark.parametrize("text", ["hello world\n", "this is not a checkpoint\n", '{"model": "weights"}\n',
                                  "abc"])
def test_text_file(tmp_path, text):
    bad = tmp_path / "notes.pt"
    bad.write_text(text)
    with pytest.raises(CheckpointError) as e:
        load_model(bad)
    _one_line_error(e)


class _Evil:
    """Unpickling this runs code that creates a marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_malicious_pickle_is_refused_and_not_executed(tmp_path, writer):
    # the payload is live: plain unpickling does create its marker
    probe = tmp_path / "probe_marker"
    pickle.loads(pickle.dumps(_Evil(probe)))
    assert probe.exists()

    marker = tmp_path / "pwned_marker"
    payload = {"model": _Evil(marker), "epoch": 1}
    path = tmp_path / "evil.pt"
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f, protocol=2)
    with pytest.raises(CheckpointError) as e:
        load_model(path)
    msg = _one_line_error(e)
    assert "refused" in msg
    assert not marker.exists(), "loading the checkpoint executed code from it"


def test_wrong_architecture_requested(tmp_path, tiny_checkpoint):
    with pytest.raises(CheckpointError) as e:
        load_model(tiny_checkpoint, arch="maskrcnn_resnet50_fpn")
    assert "tiny" in _one_line_error(e)
    # same for a plain state_dict file, whose architecture is detected from its keys
    sd_path = tmp_path / "sd.pt"
    torch.save(torch.load(tiny_checkpoint, weights_only=True)["state_dict"], sd_path)
    assert load_model(sd_path).arch == "tiny"
    with pytest.raises(CheckpointError) as e:
        load_model(sd_path, arch="maskrcnn_resnet50_fpn_v2")
    _one_line_error(e)


def test_num_classes_mismatch(tiny_checkpoint):
    assert load_model(tiny_checkpoint, num_classes=4).num_classes == 4
    with pytest.raises(CheckpointError) as e:
        load_model(tiny_checkpoint, num_classes=7)
    msg = _one_line_error(e)
    assert "4" in msg and "7" in msg


def _modified_copy(src: Path, dst: Path, key: str, value: torch.Tensor) -> Path:
    obj = torch.load(src, weights_only=True)
    assert key in obj["state_dict"]
    obj["state_dict"][key] = value
    torch.save(obj, dst)
    return dst


def test_nan_weights(tmp_path, tiny_checkpoint):
    key = "roi_heads.box_head.fc6.weight"
    w = torch.load(tiny_checkpoint, weights_only=True)["state_dict"][key].clone()
    w[0, 0] = float("nan")
    with pytest.raises(CheckpointError) as e:
        load_model(_modified_copy(tiny_checkpoint, tmp_path / "nan.pt", key, w))
    msg = _one_line_error(e)
    assert key in msg and "NaN" in msg


def test_shape_mismatch_names_the_key(tmp_path, tiny_checkpoint):
    key = "backbone.body.layer2.0.conv1.weight"
    w = torch.load(tiny_checkpoint, weights_only=True)["state_dict"][key]
    bad = torch.zeros(w.shape[0], w.shape[1] + 1, *w.shape[2:])
    with pytest.raises(CheckpointError) as e:
        load_model(_modified_copy(tiny_checkpoint, tmp_path / "shape.pt", key, bad))
    msg = _one_line_error(e)
    assert key in msg and str(tuple(bad.shape)) in msg


def test_not_a_mask_rcnn(tmp_path):
    path = tmp_path / "resnet.pt"
    torch.save({"conv1.weight": torch.zeros(2, 3, 1, 1), "fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(CheckpointError) as e:
        load_model(path)
    _one_line_error(e)
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(CheckpointError) as e:
        load_model(path)
    _one_line_error(e)


@pytest.mark.parametrize("bad", ["missing", "truncated", "text"])
def test_cli_bad_checkpoint_exits_2_with_one_line(tmp_path, tiny_checkpoint, synth_data, capsys, bad):
    path = tmp_path / f"{bad}.pt"
    if bad == "truncated":
        path.write_bytes(tiny_checkpoint.read_bytes()[:1000])
    elif bad == "text":
        path.write_text("definitely not weights\n")
    ann, images = synth_data
    rc = cli_main(["eval", "--model", str(path), "--data", str(ann), "--images", str(images)])
    err = capsys.readouterr().err
    assert rc == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("robustseg: error:") and "Traceback" not in err


def test_cli_subprocess_bad_checkpoint(tmp_path, tiny_checkpoint, synth_data):
    path = tmp_path / "bad.pt"
    path.write_bytes(tiny_checkpoint.read_bytes()[: tiny_checkpoint.stat().st_size // 2])
    ann, images = synth_data
    p = subprocess.run([sys.executable, "-m", "robustseg", "eval", "--model", str(path), "--data", str(ann),
                        "--images", str(images)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("robustseg: error:") and "bad.pt" in lines[0]


# --------------------------------------------------------------------------------------------------------------
# attack mode


@pytest.fixture
def two_samples(synth_data):
    ann, images = synth_data
    ds = CocoDataset(ann, images, category_ids=[c["id"] for c in CATEGORIES])
    samples = [ds[0], ds[1]]
    assert all(len(t["boxes"]) for _, t in samples)
    return [s[0] for s in samples], [s[1] for s in samples]


@pytest.mark.parametrize("start_training", [False, True])
def test_attack_mode_losses_without_changing_the_model(tiny_model, two_samples, start_training):
    model = tiny_model
    _randomise_norm_buffers(model, 31)
    model.train(start_training)
    model.backbone.body.stem[0].weight.requires_grad_(False)  # a mix of flags that must come back as they were
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images, targets = two_samples
    images = [im.clone().requires_grad_(True) for im in images]

    with attack_mode(model) as m:
        assert m is model
        assert model.training and model.rpn.training and model.roi_heads.training
        bns = [x for x in model.modules() if isinstance(x, nn.BatchNorm2d)]
        assert bns and not any(b.training for b in bns)
        assert not any(p.requires_grad for p in model.parameters())
        losses = model(images, targets)
        assert isinstance(losses, dict) and set(losses) == LOSS_KEYS
        assert all(torch.isfinite(v) for v in losses.values())
        sum(losses.values()).backward()

    assert all(im.grad is not None and im.grad.abs().sum() > 0 for im in images)
    assert all(p.grad is None for p in model.parameters())
    after = model.state_dict()
    assert before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert not changed, f"attack mode changed {changed[:3]}"
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert model.training == start_training
    assert all(x.training == start_training for x in model.modules())


def test_attack_mode_keeps_mixed_module_modes(tiny_model, two_samples):
    """A model being fine-tuned with BatchNorm frozen in eval() gets exactly those modes back."""
    model = tiny_model.train()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for b in bns:
        b.eval()
    modes = {name: m.training for name, m in model.named_modules()}
    images, targets = two_samples
    with attack_mode(model):
        model([im.clone().requires_grad_(True) for im in images], targets)
    assert {name: m.training for name, m in model.named_modules()} == modes


def test_attack_mode_restores_after_an_exception(tiny_model):
    model = tiny_model.eval()
    flags = [p.requires_grad for p in model.parameters()]
    with pytest.raises(ZeroDivisionError):
        with attack_mode(model):
            1 / 0
    assert [p.requires_grad for p in model.parameters()] == flags and not model.training
