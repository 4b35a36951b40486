"""robustseg compare: the same suite and gradient norms on two checkpoints, and compare.csv side by side."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from robustseg.compare import compare_checkpoints, run_names
from robustseg.models import save_checkpoint
from robustseg.models.checkpoint import load_model
from robustseg.suites import single_attack_suite


@pytest.fixture(scope="module")
def second_checkpoint(tiny_checkpoint, tmp_path_factory):
    """The test checkpoint with its input layer scaled: another model with other gradients and AP."""
    lm = load_model(tiny_checkpoint)
    with torch.no_grad():
        lm.model.backbone.body.stem[0].weight.mul_(0.5)
    path = tmp_path_factory.mktemp("ckpt_b") / "tiny_b.pt"
    save_checkpoint(path, lm.model, arch=lm.arch, arch_cfg=lm.arch_cfg, class_names=lm.class_names,
                    category_ids=lm.category_ids)
    return path


def test_compare_two_checkpoints(tiny_checkpoint, second_checkpoint, synth_data, tmp_path):
    ann, images = synth_data
    out = tmp_path / "cmp"
    suite = single_attack_suite("pgd", "4/255", "1")
    path = compare_checkpoints([str(tiny_checkpoint), str(second_checkpoint)], out, suite=suite, data=ann,
                               images=images, limit=2, progress=False,
                               model_overrides={"min_size": 64, "max_size": 64})
    assert path == out / "compare.csv"
    names = ["tiny", "tiny_b"]
    for n in names:
        assert {"metrics.csv", "gradnorms.csv", "gradnorms_summary.csv", "report.html"} <= {
            p.name for p in (out / n).iterdir()}
    assert (out / "report" / "report.html").is_file()

    df = pd.read_csv(path)
    assert sorted(df.checkpoint.unique()) == names
    assert set(df.point) == {"pgd-linf-eps0.015686-s1", "random-linf-eps0.015686-s0"}
    # every figure again, from the per-run files
    m = {n: pd.read_csv(out / n / "metrics.csv") for n in names}
    g = {n: pd.read_csv(out / n / "gradnorms_summary.csv").query("condition == 'clean'").set_index("component")
         for n in names}
    for r in df.itertuples():
        mm = m[r.checkpoint]
        row = mm[(mm.point == r.point) & (mm.iou_type == r.iou_type) & (mm.metric == "AP")].iloc[0]
        ref = m["tiny"][(m["tiny"].point == r.point) & (m["tiny"].iou_type == r.iou_type)
                        & (m["tiny"].metric == "AP")].iloc[0]
        assert r.ap == pytest.approx(row.value) and r.clean_ap == pytest.approx(row.clean_value)
        assert r.ap_drop == pytest.approx(row.clean_value - row.value, abs=1e-6)
        if ref.drop_abs:
            assert r.ap_drop_ratio == pytest.approx(row.drop_abs / ref.drop_abs, rel=1e-5)
        assert r.clean_ap_change == pytest.approx(row.clean_value - ref.clean_value, abs=1e-6)
        for comp in ("total", "loss_classifier", "loss_mask"):
            a, b = g["tiny"].loc[comp, "l1_median"], g[r.checkpoint].loc[comp, "l1_median"]
            assert getattr(r, f"grad_l1_median_{comp}") == pytest.approx(b)
            assert getattr(r, f"grad_l1_ratio_{comp}") == pytest.approx(b / a)
    assert (df[df.checkpoint == "tiny"].grad_l1_ratio_total == 1).all()
    assert not math.isclose(df[df.checkpoint == "tiny_b"].grad_l1_ratio_total.iloc[0], 1.0)


def test_run_names_are_unique():
    assert run_names(["a/m.pt", "b/m.pt", "shipped", "c/x.pt"]) == ["m-1", "m-2", "shipped", "x"]


def test_interrupted_compare_resumes_to_the_same_table(tiny_checkpoint, second_checkpoint, synth_data, tmp_path,
                                                       monkeypatch, capsys):
    import robustseg.run as runner
    from robustseg.cli import main
    ann, images = synth_data
    kw = dict(suite=single_attack_suite("fgsm", "4/255"), data=ann, images=images, limit=2, progress=False,
              model_overrides={"min_size": 64, "max_size": 64})
    ckpts = [str(tiny_checkpoint), str(second_checkpoint)]
    ref = compare_checkpoints(ckpts, tmp_path / "ref", **kw)

    real, calls = runner.execute, []

    def killed_in_the_second_run(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(runner, "execute", killed_in_the_second_run)
    with pytest.raises(KeyboardInterrupt):
        compare_checkpoints(ckpts, tmp_path / "cmp", **kw)
    monkeypatch.setattr(runner, "execute", real)
    assert not (tmp_path / "cmp" / "compare.csv").exists()
    first = (tmp_path / "cmp" / "tiny" / "metrics.csv").stat().st_mtime_ns

    # without --resume the directory is refused; with it, the finished run is kept and the rest is done
    args = ["compare", *ckpts, "--data", str(ann), "--images", str(images), "--limit", "2", "--min-size", "64",
            "--max-size", "64", "--out", str(tmp_path / "cmp")]
    assert main(args) == 2 and "not empty" in capsys.readouterr().err
    with pytest.raises(Exception, match="different seed"):  # the finished run is checked too
        compare_checkpoints(ckpts, tmp_path / "cmp", resume=True, seed=1, **kw)
    path = compare_checkpoints(ckpts, tmp_path / "cmp", resume=True, **kw)
    assert (tmp_path / "cmp" / "tiny" / "metrics.csv").stat().st_mtime_ns == first
    got, want = pd.read_csv(path), pd.read_csv(ref)
    assert got.drop(columns="run_dir").equals(want.drop(columns="run_dir"))  # run_dir: each its own folder
    with pytest.raises(Exception, match="no comparison"):
        compare_checkpoints(ckpts, tmp_path / "empty", resume=True, **kw)
