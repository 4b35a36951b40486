"""--checks full|quick|off (kinds/attack_checks.plan_probe, plan_losses): the masking probe and the per-image
objective measurements sized to the requested work, their cost said before any work and kept in run.json; off
skips every check and says so loudly."""
from __future__ import annotations

import json

import pandas as pd

from robustseg.cli import main
from robustseg.data.synth import generate
from robustseg.kinds.attack import run_suite
from robustseg.kinds.attack_checks import LOSS_BUDGET, LOSS_IMAGES, plan_losses, plan_probe
from robustseg.suites import parse_suite

from _helpers import trained_model_path


def test_the_probe_fits_the_work_in_quick_mode():
    quick_suite = plan_probe("quick", 32, 32 * (4 * 1 + 4 * 10), None)  # the default run
    # PGD-10 (at most) on 8 images, the determinism repeat and finite difference on 4 of them
    assert quick_suite["images"] == 8 and quick_suite["repeat_images"] == 4
    assert quick_suite["gradient_evaluations"] == 8 * 10 + 4 * 2  # the finite difference reuses the repeat's
    assert plan_probe("full", 32, 1, None)["gradient_evaluations"] == 8 * (20 + 2)  # PGD-20 whatever the work
    one_step = plan_probe("quick", 4, 4 * 1, None)  # a one-step attack on 4 photos: the probe would dominate
    assert one_step["images"] == 0 and "--checks full" in one_step["skipped"]
    assert plan_probe("quick", 4, 46, None)["images"] == 3  # 3 x (10 + 2) <= 46 < 4 x 12
    assert plan_probe("full", 4, 4, None)["images"] == 4
    assert plan_probe("off", 32, 10_000, None)["images"] == 0


def test_the_loss_measurements_fit_the_work_in_quick_mode():
    ids = list(range(100, 132))
    default = plan_losses("quick", ids, 32 * 49, 10)  # the default run: 9 measured points + 1 clean, per image
    assert default["images"] == 7 and default["image_ids"] == [ids[(k * 32) // 7] for k in range(7)]  # spread
    assert default["forward_passes"] == 70 <= LOSS_BUDGET * 32 * 49
    assert plan_losses("quick", ids, 10 ** 6, 10)["images"] == LOSS_IMAGES == 16  # never more than 16 images
    assert plan_losses("quick", ids[:4], 4, 2)["images"] == 0        # one-step attack on 4 photos: none fits
    assert plan_losses("quick", ids[:4], 4 * 40, 2)["images"] == 4   # 8 passes are 5% of 160
    assert plan_losses("full", ids, 1, 13)["image_ids"] == ids
    assert plan_losses("off", ids, 10_000, 13)["images"] == 0


def test_quick_measures_the_images_its_plan_chose_and_only_after_gradient_attacks(tmp_path):
    ann = generate(tmp_path / "d", 4, seed=53, size=64)
    suite = parse_suite({"name": "pgd20", "attack": [{"type": "pgd", "eps": ["4/255"], "steps": 20}]}, "pgd20")
    run_suite(trained_model_path(), suite, ann, tmp_path / "d" / "images", out=tmp_path / "run", sanity_images=0,
              bootstrap=0, progress=False)  # 80 gradient evaluations: 4 passes, clean + PGD on 2 images
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["attack"]["checks"]["losses"] == {"images": 2, "of": 4, "forward_passes": 4}
    rows = pd.read_csv(tmp_path / "run" / "per_image.csv")
    pgd = rows[rows.attack == "pgd"]
    assert pgd.loss_measured.sum() == 2 and pgd[pgd.loss_measured].loss_adv.notna().all()
    assert pgd[~pgd.loss_measured].loss_adv.isna().all() and not rows[rows.attack == "random"].loss_measured.any()


def test_checks_off_and_quick_on_the_command_line(tmp_path, capsys):
    ann = generate(tmp_path / "d", 4, seed=53, size=64)
    base = ["attack", "--model", str(trained_model_path()), "--data", str(ann), "--images",
            str(tmp_path / "d" / "images"), "--attack", "fgsm", "--eps", "4/255", "--bootstrap", "0"]
    assert main([*base, "--out", str(tmp_path / "quick")]) == 0
    err = capsys.readouterr().err
    assert "masking probe skipped" in err  # 4 gradient evaluations of attack: the probe does not fit
    assert "no per-image objective values" in err  # nor do 2 measurements of even one image
    info = json.loads((tmp_path / "quick" / "run.json").read_text())
    assert info["attack"]["checks"]["mode"] == "quick" and info["attack"]["checks"]["probe"]["images"] == 0
    assert info["attack"]["checks"]["losses"] == {"images": 0, "of": 4, "forward_passes": 0}
    assert not pd.read_csv(tmp_path / "quick" / "per_image.csv").loss_measured.any()
    sanity = json.loads((tmp_path / "quick" / "sanity.json").read_text())
    by_name = {c["check"]: c for c in sanity["checks"]}
    for name in ("moderate_eps", "loss_increased"):  # a check not made is no pass
        assert by_name[name]["verdict"] == "warn" and by_name[name]["ran"] is False
    assert sanity["verdict"] == "warn"
    assert "The masking probe did not run" in (tmp_path / "quick" / "report.html").read_text()

    assert main([*base, "--checks", "off", "--out", str(tmp_path / "off")]) == 0
    assert "checks: OFF" in capsys.readouterr().err
    off = tmp_path / "off"
    assert not (off / "sanity.json").exists()
    assert pd.read_csv(off / "per_image.csv").loss_adv.isna().all()
    html = (off / "report.html").read_text()
    assert "--checks off" in html and "no sanity check ran" in html
    got, want = pd.read_csv(off / "metrics.csv"), pd.read_csv(tmp_path / "quick" / "metrics.csv")
    assert (got.value - want.value).abs().max() < 1e-9  # the attacks themselves are the same
