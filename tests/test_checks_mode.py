"""--checks full|quick|off (kinds/attack_checks.plan_probe): the masking probe sized to the requested work,
its cost said before any work and kept in run.json; off skips every check and says so loudly."""
from __future__ import annotations

import json

import pandas as pd

from robustseg.cli import main
from robustseg.data.synth import generate
from robustseg.kinds.attack_checks import plan_probe

from _helpers import trained_model_path


def test_the_probe_fits_the_work_in_quick_mode():
    quick_suite = plan_probe("quick", 32, 32 * (4 * 1 + 4 * 10), None)  # the default run
    assert quick_suite["images"] == 8 and quick_suite["gradient_evaluations"] == 8 * (20 + 3)
    one_step = plan_probe("quick", 4, 4 * 1, None)  # a one-step attack on 4 photos: the probe would dominate
    assert one_step["images"] == 0 and "--checks full" in one_step["skipped"]
    assert plan_probe("quick", 4, 46, None)["images"] == 2  # 2 x (20 + 3) <= 46
    assert plan_probe("full", 4, 4, None)["images"] == 4
    assert plan_probe("off", 32, 10_000, None)["images"] == 0


def test_checks_off_and_quick_on_the_command_line(tmp_path, capsys):
    ann = generate(tmp_path / "d", 4, seed=53, size=64)
    base = ["attack", "--model", str(trained_model_path()), "--data", str(ann), "--images",
            str(tmp_path / "d" / "images"), "--attack", "fgsm", "--eps", "4/255", "--bootstrap", "0"]
    assert main([*base, "--out", str(tmp_path / "quick")]) == 0
    err = capsys.readouterr().err
    assert "masking probe skipped" in err  # 4 gradient evaluations of attack: the probe does not fit
    info = json.loads((tmp_path / "quick" / "run.json").read_text())
    assert info["attack"]["checks"]["mode"] == "quick" and info["attack"]["checks"]["probe"]["images"] == 0
    sanity = json.loads((tmp_path / "quick" / "sanity.json").read_text())
    probe = next(c for c in sanity["checks"] if c["check"] == "moderate_eps")
    assert probe["verdict"] == "warn" and probe["ran"] is False and sanity["verdict"] == "warn"  # no silent pass
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
