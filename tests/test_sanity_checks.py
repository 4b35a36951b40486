"""The second edition of robustseg/sanity.py on hand-made figures (no model): margins with paired intervals,
ordering, loss_increased at 95% whatever the count, black-box against white-box, n/a without clean AP, and a check
of each verdict in the report. The checks on real (masked) models are in test_masked_models.py."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from report_fixtures import make_dataset, make_run

from robustseg import sanity
from robustseg.errors import RobustsegError
from robustseg.report.html import write_report
from robustseg.suites import AttackPoint

EPS = 8 / 255
RANDOM, FGSM = AttackPoint("random", "linf", EPS), AttackPoint("fgsm", "linf", EPS, 1)
PGD, SQUARE = AttackPoint("pgd", "linf", EPS, 10), AttackPoint("square", "linf", EPS, 100)


def _metrics(aps: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame([{"point": k, "iou_type": t, "metric": "AP", "value": v} for k, v in aps.items()
                         for t in ("bbox", "segm")])


def _boots(spread: dict[str, float], aps: dict[str, float], n: int = 200):
    """Per point, AP on n resamples: its value plus shared noise (paired) and its own noise of ``spread``."""
    rng = np.random.default_rng(0)
    shared = rng.normal(0, 0.01, n)
    own = {k: rng.normal(0, spread.get(k, 0.0), n) for k in aps}
    return lambda key, iou_type: aps[key] + shared + own[key]


def _by_name(report) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for c in report["checks"]:
        out.setdefault(c["check"], []).append(c)
    return out


def _rows(point: AttackPoint, rose: list[bool]) -> list[dict]:
    return [{"image_id": i, "point": point.key, "attack": point.attack, "loss_clean": 1.0,
             "loss_adv": 2.0 if up else 0.5} for i, up in enumerate(rose)]


def test_a_two_image_run_with_one_loss_that_fell_warns():
    aps = {"clean": 0.8, RANDOM.key: 0.8, FGSM.key: 0.5}
    report = sanity.run_checks(_metrics(aps), [RANDOM, FGSM], _rows(FGSM, [True, False]), [], None)
    loss = _by_name(report)["loss_increased"][0]
    assert loss["verdict"] == "warn" and "1/2 images" in loss["detail"] and report["verdict"] == "warn"
    nineteen = sanity.loss_increased(_rows(FGSM, [True] * 19 + [False]))[0]  # 95% of 20
    assert nineteen["verdict"] == "pass" and nineteen["rose"] == 19 and nineteen["images"] == 20


def test_beating_random_needs_a_margin_beyond_its_interval():
    aps = {"clean": 0.8, RANDOM.key: 0.79, FGSM.key: 0.78}
    noisy = sanity.run_checks(_metrics(aps), [RANDOM, FGSM], [], [], None, _boots({FGSM.key: 0.03}, aps))
    check = _by_name(noisy)["beats_random"][0]
    assert check["verdict"] == "warn" and check["interval"][0] < 0 < check["interval"][1]  # lower AP, within noise
    clear = {**aps, FGSM.key: 0.5}
    assert _by_name(sanity.run_checks(_metrics(clear), [RANDOM, FGSM], [], [], None, _boots({}, clear)))[
        "beats_random"][0]["verdict"] == "pass"
    no_interval = _by_name(sanity.run_checks(_metrics(aps), [RANDOM, FGSM], [], [], None))["beats_random"][0]
    assert no_interval["verdict"] == "warn" and "no interval" in no_interval["detail"]  # 0.01 < TOL


def test_pgd_weaker_than_fgsm_warns_and_more_steps_are_checked():
    pgd5 = AttackPoint("pgd", "linf", EPS, 5)
    aps = {"clean": 0.8, RANDOM.key: 0.8, FGSM.key: 0.4, PGD.key: 0.5, pgd5.key: 0.3}
    checks = _by_name(sanity.run_checks(_metrics(aps), [RANDOM, FGSM, pgd5, PGD], [], [], None))
    ordering = {c["point"]: c["verdict"] for c in checks["pgd_vs_fgsm"]}
    assert ordering == {PGD.key: "warn", pgd5.key: "pass"}
    steps = checks["monotone_steps"][0]
    assert steps["verdict"] == "warn" and steps["rises"][0]["from"] == pgd5.key


def test_more_restarts_must_not_be_weaker():
    one, two = (AttackPoint("apgd", "linf", EPS, 5, params=(("restarts", r),)) for r in (1, 2))
    aps = {"clean": 0.8, RANDOM.key: 0.8, one.key: 0.3, two.key: 0.4}
    check = _by_name(sanity.run_checks(_metrics(aps), [RANDOM, one, two], [], [], None))["monotone_restarts"][0]
    assert check["verdict"] == "warn" and check["points"] == [one.key, two.key]


def test_a_black_box_attack_stronger_than_the_white_box_warns():
    aps = {"clean": 0.8, RANDOM.key: 0.8, PGD.key: 0.6, SQUARE.key: 0.3}
    check = _by_name(sanity.run_checks(_metrics(aps), [RANDOM, PGD, SQUARE], [], [], None, _boots({}, aps)))[
        "black_box"][0]
    assert check["verdict"] == "warn" and check["white_box"] == PGD.key and check["gap"] == pytest.approx(0.3)
    weaker = {**aps, SQUARE.key: 0.7}
    assert _by_name(sanity.run_checks(_metrics(weaker), [RANDOM, PGD, SQUARE], [], [], None, _boots({}, weaker)))[
        "black_box"][0]["verdict"] == "pass"


def test_no_clean_accuracy_is_not_applicable_not_pass_or_warn():
    """A random-init R50-FPN on real photos: clean AP 0.000 (the issue's run had beats_random warn on 0 vs 0)."""
    aps = {"clean": 0.0, RANDOM.key: 0.0, FGSM.key: 0.0, PGD.key: 0.0}
    probe = {"eps": 32 / 255, "steps": 20, "images": 8, "ap": 0.0, "clean_ap": 0.0, "noise_ap": 0.0,
             "interval": None, "ladder": [], "repeat": {"images": 8, "prediction_diff": 0.0, "gradient_cosine": 1.0},
             "fidelity": {"images": 8, "step": 0.5 / 255, "ratios": [0.9, 1.1], "median": 1.0}}
    report = sanity.run_checks(_metrics(aps), [RANDOM, FGSM, PGD], _rows(PGD, [True, True]), [], probe)
    verdicts = {name: {c["verdict"] for c in cs} for name, cs in _by_name(report).items()}
    for name in ("beats_random", "pgd_vs_fgsm", "moderate_eps"):
        assert verdicts[name] == {"n/a"}, name
    assert verdicts["loss_increased"] == verdicts["deterministic"] == verdicts["gradient_fidelity"] == {"pass"}
    assert report["verdict"] == "n/a"


def test_gradient_fidelity():
    def probe(ratios):
        import statistics
        return {"fidelity": {"images": 4, "step": 0.5 / 255, "ratios": ratios,
                             "median": statistics.median(ratios) if ratios else float("nan")}}
    assert sanity.gradient_fidelity(probe([0.9, 0.4, 1.3, 0.7]))["verdict"] == "pass"
    assert sanity.gradient_fidelity(probe([0.1, 0.05, 0.6, 0.02]))["verdict"] == "warn"  # mostly not the derivative
    assert sanity.gradient_fidelity(probe([]))["verdict"] == "n/a"  # zero gradients: the gradients check's case


def test_saturated_scores():
    def results(scores):
        return [{"image_id": 1, "score": s} for s in scores]
    assert sanity.saturated_scores(results([1.0] * 10 + [0.2]))["verdict"] == "warn"  # all 10 confident ones
    assert sanity.saturated_scores(results([1.0] * 8 + [0.99998, 0.9]))["verdict"] == "pass"  # 80%
    assert sanity.saturated_scores(results([0.3]))["verdict"] == "n/a"


def test_every_verdict_reads_back_and_renders(tmp_path):
    run = make_run(tmp_path / "run", make_dataset(tmp_path / "data"))
    checks = [{"check": "moderate_eps", "verdict": "warn", "detail": "PGD-20 at eps 32/255: AP 0.5 vs noise 0.8"},
              {"check": "black_box", "verdict": "n/a", "detail": "no gradient attack at eps 8/255"},
              {"check": "deterministic", "verdict": "pass", "detail": "cosine 1.0000"}]
    (run / "sanity.json").write_text(json.dumps({"verdict": "warn", "checks": checks}))
    assert sanity.read_sanity(run / "sanity.json")["checks"][1]["verdict"] == "n/a"
    html = write_report(run).read_text()
    for c in checks:
        assert f'data-check="{c["check"]}"' in html and c["detail"] in html
    assert '<span class="badge n/a">n/a</span>' in html
    assert '<span class="warned">moderate_eps</span>' in html  # the verdict names the check that warned
    assert sanity.verdict_line(sanity.read_sanity(run / "sanity.json")) == \
        "sanity checks: warn (moderate_eps; see sanity.json)"
    (run / "sanity.json").write_text(json.dumps({"verdict": "maybe", "checks": []}))
    with pytest.raises(RobustsegError, match="pass|warn|n/a"):
        sanity.read_sanity(run / "sanity.json")
