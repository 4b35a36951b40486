"""Long-run faults: kill and --resume, torchrun sharding, unreadable images, CUDA OOM, non-finite gradients."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

from robustseg.cli import main
from robustseg.data.synth import generate
from robustseg import run_suite
from robustseg.run.stream import PassRunner
from robustseg.suites import parse_suite

from _helpers import load_trained_model, trained_model_path

SUITE = {"attack": [{"type": "fgsm", "eps": ["8/255"]}, {"type": "pgd", "eps": ["8/255"], "steps": 2}]}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("faultdata")
    return generate(root, 8, seed=41), root / "images"


@pytest.fixture(scope="module")
def suite_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("suite") / "mini.toml"
    # an ensemble suite: its robust point and winners must resume and shard like every other point
    p.write_text('ensemble = true\n[[attack]]\ntype = "fgsm"\neps = ["8/255"]\n\n'
                 '[[attack]]\ntype = "pgd"\neps = ["8/255"]\nsteps = 2\n')
    return p


def _cli(data, suite_file, out, *extra):
    return [sys.executable, "-m", "robustseg", "attack", "--model", str(trained_model_path()), "--data",
            str(data[0]), "--images", str(data[1]), "--suite", str(suite_file), "--batch-size", "2",
            "--out", str(out), *extra]


@pytest.fixture(scope="module")
def reference(data, suite_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    subprocess.run(_cli(data, suite_file, out), check=True, env=ENV, capture_output=True)
    return out


def test_killed_run_resumes_to_identical_metrics(data, suite_file, reference, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(_cli(data, suite_file, out), env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    done = out / "work" / "images" / "rank0" / "done.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if done.exists() and len(done.read_text().splitlines()) >= 2:  # at least one batch finished
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "metrics.csv").exists()
    lines_before = len(done.read_text().splitlines())
    assert 2 <= lines_before < 8
    # without --resume the directory is refused, untouched
    r = subprocess.run(_cli(data, suite_file, out), env=ENV, capture_output=True, text=True)
    assert r.returncode == 2 and "--resume" in r.stderr and "Traceback" not in r.stderr
    subprocess.run(_cli(data, suite_file, out, "--resume"), check=True, env=ENV, capture_output=True)
    assert (out / "metrics.csv").read_bytes() == (reference / "metrics.csv").read_bytes()
    assert (out / "per_image.csv").read_bytes() == (reference / "per_image.csv").read_bytes()
    assert (out / "ensemble_winners.csv").read_bytes() == (reference / "ensemble_winners.csv").read_bytes()
    assert json.loads((out / "run.json").read_text())["status"] == "complete"
    assert not (out / "work").exists()


def test_torchrun_sharding_gives_identical_metrics(data, suite_file, reference, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29533",
           *_cli(data, suite_file, out)[1:]]
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((out / "run.json").read_text())["world_size"] == 2
    assert (out / "metrics.csv").read_bytes() == (reference / "metrics.csv").read_bytes()
    assert "robust-linf-eps0.031373" in (out / "metrics.csv").read_text()
    assert (out / "ensemble_winners.csv").read_bytes() == (reference / "ensemble_winners.csv").read_bytes()
    for name in ("clean.json", "pgd-linf-eps0.031373-s2.json", "robust-linf-eps0.031373.json"):
        assert (out / "predictions" / name).read_bytes() == (reference / "predictions" / name).read_bytes()


def _broken_copy(data, tmp_path) -> tuple[Path, Path]:
    """The dataset with a truncated image, a missing one, and one whose declared size is wrong."""
    ann = json.loads(Path(data[0]).read_text())
    images = tmp_path / "images"
    images.mkdir()
    for im in ann["images"]:
        (images / im["file_name"]).write_bytes((Path(data[1]) / im["file_name"]).read_bytes())
    raw = (images / ann["images"][1]["file_name"]).read_bytes()
    (images / ann["images"][1]["file_name"]).write_bytes(raw[: len(raw) // 3])      # truncated
    (images / ann["images"][2]["file_name"]).unlink()                                # missing
    Image.new("RGB", (50, 40)).save(images / ann["images"][3]["file_name"])         # wrong size
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(ann))
    return path, images


def test_unreadable_images_are_skipped_logged_and_counted(data, tmp_path, capsys):
    ann, images = _broken_copy(data, tmp_path)
    res = run_suite(load_trained_model(), parse_suite(SUITE), ann, images, out=tmp_path / "run", progress=False)
    info = json.loads((res.out / "run.json").read_text())
    ids = json.loads(ann.read_text())["images"]
    bad = {ids[1]["id"], ids[2]["id"], ids[3]["id"]}
    assert info["num_failed_images"] == 3 and {f["image_id"] for f in info["failed_images"]} == bad
    assert info["num_evaluated_images"] == 5
    per_image = pd.read_csv(res.out / "per_image.csv")
    assert set(per_image.image_id) & bad == set() and per_image.image_id.nunique() == 5
    err = capsys.readouterr().err
    assert err.count("skipping image") == 3
    # --on-error fail: one line naming the problems, exit 2, nothing written
    code = main(["attack", "--model", str(trained_model_path()), "--data", str(ann), "--images", str(images),
                 "--attack", "fgsm", "--eps", "8/255", "--on-error", "fail", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "3 image(s) cannot be used" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_cuda_oom_halves_the_batch_and_continues(data, tmp_path, monkeypatch, capsys):
    real = PassRunner.commit

    def oom_on_big_batches(self, imgs, tgts, ids, key):
        if len(ids) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(self, imgs, tgts, ids, key)

    monkeypatch.setattr(PassRunner, "commit", oom_on_big_batches)
    res = run_suite(load_trained_model(), parse_suite(SUITE), *data, out=tmp_path / "run", batch_size=4,
                    limit=4, progress=False)
    assert pd.read_csv(res.out / "per_image.csv").image_id.nunique() == 4
    assert "retrying as 2 + 2" in capsys.readouterr().err


def test_non_finite_gradients_are_counted_and_do_not_poison_images(data, tmp_path):
    lm = load_trained_model()
    normalize = lm.model.transform.normalize

    def nan_gradient(x):  # forward unchanged; d/dx sqrt(0) = inf, times 0 = NaN in the backward pass
        z = x.clamp_min(0) - x.clamp_min(0)
        return normalize(x + 0 * torch.sqrt(z))

    lm.model.transform.normalize = nan_gradient
    res = run_suite(lm, parse_suite(SUITE), *data, out=tmp_path / "run", limit=2, progress=False)
    info = json.loads((res.out / "run.json").read_text())
    assert info["nonfinite_gradients"] > 0
    sanity = {c["check"]: c for c in json.loads((res.out / "sanity.json").read_text())["checks"]}
    assert sanity["gradients"]["verdict"] == "warn" and sanity["gradients"]["nonfinite"] > 0
    per_image = pd.read_csv(res.out / "per_image.csv")
    assert per_image.linf.notna().all() and (per_image.linf <= 8 / 255 + 1e-6).all()


def test_nothing_is_written_outside_the_output_directory(data, tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("ROBUSTSEG_CACHE", str(tmp_path / "cache"))
    before = {p for p in Path(data[1]).parent.rglob("*")}
    run_suite(load_trained_model(), parse_suite(SUITE), *data, out=cwd / "out", limit=2, progress=False)
    assert sorted(p.name for p in cwd.iterdir()) == ["out"]
    assert {p for p in Path(data[1]).parent.rglob("*")} == before
    assert not (tmp_path / "cache").exists()


# ------------------------------------------------------------------------------------- probe and patch runs

PROBES = "line-canny,silhouette,scramble-4x4,cue-conflict"


def test_interrupted_probe_run_resumes_to_identical_results(data, tmp_path, monkeypatch):
    import robustseg.kinds.probe as probe_run
    from robustseg import run_probes
    lm = load_trained_model()
    kw = dict(probes=PROBES, batch_size=2, seed=3, progress=False)
    ref = run_probes(lm, *data, out=tmp_path / "ref", **kw)

    real, calls = probe_run.predict, []

    def dies_on_the_ninth_call(model, images):  # the 3rd batch of images (3 probes per batch)
        calls.append(1)
        if len(calls) == 9:
            raise KeyboardInterrupt
        return real(model, images)
    monkeypatch.setattr(probe_run, "predict", dies_on_the_ninth_call)
    with pytest.raises(KeyboardInterrupt):
        run_probes(lm, *data, out=tmp_path / "run", **kw)
    monkeypatch.setattr(probe_run, "predict", real)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "running"
    with pytest.raises(Exception, match="different seed"):
        run_probes(lm, *data, out=tmp_path / "run", resume=True, **{**kw, "seed": 4})
    done = [r["image_id"] for r in
            map(json.loads, (tmp_path / "run" / "work" / "images" / "rank0" / "done.jsonl").read_text().splitlines())]
    assert len(done) == 4  # two batches were finished before the kill; the third is redone

    res = run_probes(lm, *data, out=tmp_path / "run", resume=True, **kw)
    for f in ("metrics.csv", "probes.csv", "shape_bias.json", "decisions.csv", "predictions/probe-silhouette.json"):
        # the cue-conflict set's path (under each run's own folder) is the only thing allowed to differ
        assert (res.out / f).read_text() == (ref.out / f).read_text().replace(str(ref.out), str(res.out)), f
    info = json.loads((res.out / "run.json").read_text())
    assert info["status"] == "complete" and len(info["resumed"]) == 1
    assert not (res.out / "work").exists()  # the streamed predictions live on in predictions/
    with pytest.raises(Exception, match="already complete"):
        run_probes(lm, *data, out=tmp_path / "run", resume=True, **kw)


def test_probe_and_patch_runs_skip_unreadable_images(data, tmp_path, capsys):
    from robustseg import run_patches, run_probes
    from robustseg.patches.suite import parse_patch_suite
    ann, images = _broken_copy(data, tmp_path)
    ids = json.loads(ann.read_text())["images"]
    bad = {ids[1]["id"], ids[2]["id"], ids[3]["id"]}
    lm = load_trained_model()
    res = run_probes(lm, ann, images, probes=PROBES, out=tmp_path / "probe", progress=False)
    info = json.loads((res.out / "run.json").read_text())
    assert info["num_failed_images"] == 3 and {f["image_id"] for f in info["failed_images"]} == bad
    assert info["num_evaluated_images"] == 5
    for point in ("clean", "probe-silhouette"):
        preds = json.loads((res.out / "predictions" / f"{point}.json").read_text())
        assert preds and {p["image_id"] for p in preds} & bad == set()
    assert capsys.readouterr().err.count("skipping image") == 3

    suite = parse_patch_suite({"kinds": ["per-image"], "baselines": ["grey"], "per-image": {"steps": 1}}, "t")
    res = run_patches(lm, suite, ann, images, out=tmp_path / "patch", progress=False)
    info = json.loads((res.out / "run.json").read_text())
    assert info["num_failed_images"] == 3 and {f["image_id"] for f in info["failed_images"]} == bad
    assert info["num_evaluated_images"] == 5
    preds = json.loads((res.out / "predictions" / "patch-image.json").read_text())
    assert preds and {p["image_id"] for p in preds} & bad == set()
    assert capsys.readouterr().err.count("skipping image") == 3

    # --on-error fail: one line naming the problems, exit 2, nothing written
    for cmd in (["probe", "--probes", "silhouette"], ["patch"]):
        code = main([*cmd, "--model", str(trained_model_path()), "--data", str(ann), "--images", str(images),
                     "--on-error", "fail", "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err.strip()
        assert code == 2 and "3 image(s) cannot be used" in err and len(err.splitlines()) == 1, err
        assert not (tmp_path / "o").exists()
