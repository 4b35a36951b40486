"""The run engine, once for every kind: torchrun sharding, resume after a kill, CUDA out-of-memory halving and
DataLoader workers go through the same code whatever the kind; the run context refuses a label-space mismatch
(naming both sides) unless a category map is given, and any unreadable annotations file is one line for every
command."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch

from robustseg import run_patches, run_probes, run_suite
from robustseg.cli import main
from robustseg.data.synth import generate
from robustseg.patches.suite import parse_patch_suite
from robustseg.run.stream import PassRunner
from robustseg.suites import parse_suite

from _helpers import load_trained_model, trained_model_path

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
PROBES = "silhouette,scramble-4x4,cue-conflict"
CORRUPT = "shot_noise,motion_blur,spatter"  # random draws in each: per-image seeds, whoever runs the image
PATCH = {"kinds": ["universal", "per-image"], "baselines": ["grey"], "universal": {"steps": 2, "train_images": 2},
         "per-image": {"steps": 1}}
PATCH_TOML = ('kinds = ["universal", "per-image"]\nbaselines = ["grey"]\n[universal]\nsteps = 2\ntrain_images = 2\n'
              '[per-image]\nsteps = 1\n')

# the physical sticker (kinds/patch_physical.py): trained before the pass, judged under all conditions and one alone
PHYSICAL = {"kinds": ["physical"], "baselines": ["grey"],
            "physical": {"steps": 4, "train_images": 2, "batch_size": 1, "resolution": 8, "save_every": 2,
                         "components": ["perspective"]}}
PHYSICAL_TOML = ('kinds = ["physical"]\nbaselines = ["grey"]\n[physical]\nsteps = 4\ntrain_images = 2\n'
                 'batch_size = 1\nresolution = 8\nsave_every = 2\ncomponents = ["perspective"]\n')


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("enginedata")
    return generate(root, 6, seed=43, size=96), root / "images"


@pytest.fixture(scope="module")
def patch_suite_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("patchsuite") / "mini-patch.toml"
    p.write_text(PATCH_TOML)
    (p.parent / "mini-physical.toml").write_text(PHYSICAL_TOML)
    return p


def _cli(kind: str, data, out, *extra) -> list[str]:
    return [kind, "--model", str(trained_model_path()), "--data", str(data[0]), "--images", str(data[1]),
            "--batch-size", "2", "--out", str(out), *extra]


def _torchrun(args: list[str], port: int) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port),
           "-m", "robustseg", *args]
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("kind,extra,port", [("probe", ["--probes", PROBES], 29541), ("patch", None, 29542),
                                             ("corrupt", ["--corruptions", CORRUPT, "--severities", "2,5"], 29543),
                                             ("patch", "physical", 29544)])
def test_torchrun_two_processes_give_the_metrics_of_one(kind, extra, port, data, patch_suite_file, tmp_path):
    if extra in (None, "physical"):
        extra = ["--suite", str(patch_suite_file if extra is None else patch_suite_file.parent / "mini-physical.toml")]
    assert main(_cli(kind, data, tmp_path / "one", *extra)) == 0
    r = _torchrun(_cli(kind, data, tmp_path / "two", *extra), port)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((tmp_path / "two" / "run.json").read_text())["world_size"] == 2
    assert (tmp_path / "two" / "metrics.csv").read_bytes() == (tmp_path / "one" / "metrics.csv").read_bytes()
    table = {"probe": "probes.csv", "patch": "patches.csv", "corrupt": "corruptions.csv"}[kind]
    assert (tmp_path / "two" / table).read_bytes() == (tmp_path / "one" / table).read_bytes()


def test_patch_run_killed_mid_pass_resumes_to_identical_results(data, tmp_path, monkeypatch):
    import robustseg.kinds.patch as patch_kind
    lm, suite = load_trained_model(), parse_patch_suite(PATCH, "t")
    kw = dict(batch_size=2, seed=5, progress=False)
    ref = run_patches(lm, suite, *data, out=tmp_path / "ref", **kw)
    real, calls = patch_kind.predict, []

    def dies_in_the_second_batch(model, images):  # 4 predictions per batch: universal, grey, image, grey
        calls.append(1)
        if len(calls) == 6:
            raise KeyboardInterrupt
        return real(model, images)
    monkeypatch.setattr(patch_kind, "predict", dies_in_the_second_batch)
    with pytest.raises(KeyboardInterrupt):
        run_patches(lm, suite, *data, out=tmp_path / "run", **kw)
    monkeypatch.setattr(patch_kind, "predict", real)
    done = (tmp_path / "run" / "work" / "images" / "rank0" / "done.jsonl").read_text().splitlines()
    assert len(done) == 2  # the first batch was committed, the second is redone
    res = run_patches(lm, suite, *data, out=tmp_path / "run", resume=True, **kw)
    for f in ("metrics.csv", "patches.csv", "predictions/patch-image.json", "patch_training.csv"):
        assert (res.out / f).read_bytes() == (ref.out / f).read_bytes(), f
    assert torch.equal(torch.load(res.out / "patches" / "universal.pt", weights_only=True)["patch"],
                       torch.load(ref.out / "patches" / "universal.pt", weights_only=True)["patch"])
    assert len(json.loads((res.out / "run.json").read_text())["resumed"]) == 1


def test_physical_patch_run_killed_in_training_and_mid_pass_resumes_to_identical_results(data, tmp_path,
                                                                                          monkeypatch):
    import robustseg.kinds.patch as patch_kind
    import robustseg.kinds.patch_physical as physical_kind
    lm, suite = load_trained_model(), parse_patch_suite(PHYSICAL, "t")
    kw = dict(batch_size=2, seed=5, progress=False)
    ref = run_patches(lm, suite, *data, out=tmp_path / "ref", **kw)
    real_scene, steps = physical_kind.physical_scene, []

    def scene_dying_at_step_3(cfg, eot):  # the state is saved every 2 steps: steps 1-2 are kept, 3 is redone
        scene = real_scene(cfg, eot)

        def step(*args):
            steps.append(1)
            if len(steps) == 3:
                raise KeyboardInterrupt
            return scene(*args)
        return step
    monkeypatch.setattr(physical_kind, "physical_scene", scene_dying_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        run_patches(lm, suite, *data, out=tmp_path / "run", **kw)
    monkeypatch.setattr(physical_kind, "physical_scene", real_scene)
    assert torch.load(tmp_path / "run" / "work" / "physical.state.pt", weights_only=True)["step"] == 2
    real, calls = patch_kind.predict, []

    def dies_in_the_second_batch(model, images):  # 6 predictions per batch: 3 stickers x (all, perspective)
        calls.append(1)
        if len(calls) == 9:
            raise KeyboardInterrupt
        return real(model, images)
    monkeypatch.setattr(patch_kind, "predict", dies_in_the_second_batch)
    with pytest.raises(KeyboardInterrupt):
        run_patches(lm, suite, *data, out=tmp_path / "run", resume=True, **kw)
    monkeypatch.setattr(patch_kind, "predict", real)
    done = (tmp_path / "run" / "work" / "images" / "rank0" / "done.jsonl").read_text().splitlines()
    assert len(done) == 2  # the first batch was committed, the second is redone
    res = run_patches(lm, suite, *data, out=tmp_path / "run", resume=True, **kw)
    for f in ("metrics.csv", "patches.csv", "physical_training.csv", "predictions/patch-physical-print.json",
              "patches/physical-print.png"):
        assert (res.out / f).read_bytes() == (ref.out / f).read_bytes(), f
    assert len(json.loads((res.out / "run.json").read_text())["resumed"]) == 2


def test_physical_resume_refuses_a_colours_csv_edited_since_the_kill(data, tmp_path, monkeypatch):
    import robustseg.kinds.patch as patch_kind
    from robustseg.errors import RobustsegError
    chart = tmp_path / "chart.csv"
    chart.write_text("r,g,b\n20,20,20\n230,230,230\n")
    suite, kw = parse_patch_suite(PHYSICAL, "t"), dict(batch_size=2, seed=5, progress=False, colours=str(chart))

    def dies(model, images):
        raise KeyboardInterrupt
    monkeypatch.setattr(patch_kind, "predict", dies)
    with pytest.raises(KeyboardInterrupt):
        run_patches(load_trained_model(), suite, *data, out=tmp_path / "run", **kw)
    monkeypatch.undo()
    chart.write_text("r,g,b\n20,20,20\n230,30,30\n")  # the same path, other colours
    with pytest.raises(RobustsegError, match="--resume: .* different patch"):
        run_patches(load_trained_model(), suite, *data, out=tmp_path / "run", resume=True, **kw)


def test_oom_halving_and_workers_are_the_engines_for_every_kind(data, tmp_path, monkeypatch, capsys):
    lm = load_trained_model()
    ref = run_probes(lm, *data, probes="silhouette", out=tmp_path / "ref", batch_size=4, progress=False)
    workers = run_probes(lm, *data, probes="silhouette", out=tmp_path / "workers", batch_size=4, workers=1,
                         progress=False)
    assert (workers.out / "metrics.csv").read_bytes() == (ref.out / "metrics.csv").read_bytes()
    real = PassRunner.commit

    def oom_on_big_batches(self, imgs, tgts, ids, key):
        if len(ids) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(self, imgs, tgts, ids, key)
    monkeypatch.setattr(PassRunner, "commit", oom_on_big_batches)
    res = run_probes(lm, *data, probes="silhouette", out=tmp_path / "oom", batch_size=4, progress=False)
    assert "retrying as 2 + 2" in capsys.readouterr().err
    got, want = pd.read_csv(res.out / "metrics.csv"), pd.read_csv(ref.out / "metrics.csv")
    assert list(got.point) == list(want.point) and (got.value - want.value).abs().max() < 1e-9


def _relabelled(data, tmp_path):
    """The same images and objects, their categories renamed and renumbered (a user's own label space)."""
    ann = json.loads(data[0].read_text())
    new = {1: (10, "ball"), 2: (20, "box"), 3: (30, "wedge")}
    ann["categories"] = [{"id": new[c["id"]][0], "name": new[c["id"]][1]} for c in ann["categories"]]
    for a in ann["annotations"]:
        a["category_id"] = new[a["category_id"]][0]
    path = tmp_path / "relabelled.json"
    path.write_text(json.dumps(ann))
    cmap = tmp_path / "map.json"
    cmap.write_text(json.dumps({"ball": "circle", "20": "square", "wedge": 3}))
    return path, cmap


def test_label_space_mismatch_is_refused_naming_both_sides_and_a_map_fixes_it(data, tmp_path, capsys):
    ann, cmap = _relabelled(data, tmp_path)
    for kind in ("attack", "probe", "patch"):
        code = main(_cli(kind, (ann, data[1]), tmp_path / f"no-map-{kind}"))
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert "circle" in err and "ball" in err and "--category-map" in err, err
        assert not (tmp_path / f"no-map-{kind}").exists()
    suite = parse_suite({"attack": [{"type": "fgsm", "eps": ["4/255"]}]})
    lm = load_trained_model()
    same = run_suite(lm, suite, *data, out=tmp_path / "same", progress=False, sanity_images=0)
    mapped = run_suite(load_trained_model(), suite, ann, data[1], out=tmp_path / "mapped", progress=False,
                       sanity_images=0, category_map=cmap)
    assert (mapped.metrics.value.values == same.metrics.value.values).all()  # the same AP in the user's ids
    preds = json.loads((mapped.out / "predictions" / "clean.json").read_text())
    assert preds and {p["category_id"] for p in preds} <= {10, 20, 30}
    info = json.loads((mapped.out / "run.json").read_text())
    assert info["category_map"] == {"ball": "circle", "20": "square", "wedge": 3}


def _deep(path):
    path.write_text("[" * 200_000 + "]" * 200_000)
    return path


@pytest.mark.parametrize("kind", ["attack", "probe", "patch", "gradnorm", "corrupt"])
def test_unreadable_annotations_are_one_line_for_every_kind(kind, data, tmp_path, capsys):
    for bad in (_deep(tmp_path / "deep.json"), tmp_path / "png.json"):
        if bad.name == "png.json":
            bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
        code = main(_cli(kind, (bad, data[1]), tmp_path / "out"))
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert str(bad) in err
        assert not (tmp_path / "out").exists()
