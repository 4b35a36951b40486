"""Suite files (robustseg.suites): the shipped suites, validation errors (API and CLI), the random baseline, and a
property test that the parser only ever fails with SuiteError. No model is loaded anywhere in this file."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robustseg.cli import main
from robustseg.errors import SuiteError
from robustseg.suites import ALLOWED, REPO_SUITES, load_suite, parse_suite, single_attack_suite

REPO = Path(__file__).resolve().parent.parent


def _points(suite):
    return {(p.attack, p.norm, round(p.eps * 255, 6) if p.norm == "linf" else p.eps, p.steps) for p in suite.points}


def _assert_baselines(suite):
    """A same-norm random point at every (norm, eps > 0) attacked by a gradient attack, exactly one each."""
    attacked = {(p.norm, p.eps) for p in suite.points if p.attack in ("fgsm", "pgd", "mifgsm") and p.eps > 0}
    randoms = [(p.norm, p.eps) for p in suite.points if p.attack == "random"]
    assert attacked <= set(randoms)
    assert len(randoms) == len(set(randoms))


def test_shipped_suites_are_the_repo_attack_files():
    assert REPO_SUITES == REPO / "attacks"
    assert (REPO_SUITES / "quick.toml").is_file() and (REPO_SUITES / "standard.toml").is_file()


def test_quick_suite():
    s = load_suite("quick")
    assert s.name == "quick" and s.source == str(REPO_SUITES / "quick.toml")
    assert load_suite(None).points == s.points  # the default suite
    assert load_suite(REPO_SUITES / "quick.toml").points == s.points
    expected = {("random", "linf", k, 0) for k in (1, 2, 4, 8)} | {("fgsm", "linf", k, 1) for k in (1, 2, 4, 8)} | \
        {("pgd", "linf", k, 10) for k in (1, 2, 4, 8)} | {("pgd", "linf", 8, 5), ("square", "linf", 8, 20)}
    # the last two: what the sanity checks need (monotone_steps, black_box)
    assert _points(s) == expected
    assert len(s.points) == len(expected)
    assert {p.eps_label for p in s.points} == {"1/255", "2/255", "4/255", "8/255"}
    assert all(p.losses == ("loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg")
               for p in s.points if p.attack != "random")
    assert len({p.key for p in s.points}) == len(s.points)  # keys name prediction files: unique
    _assert_baselines(s)


def test_standard_suite():
    s = load_suite("standard")
    assert s.name == "standard"
    linf = (1, 2, 4, 8, 16)
    expected = {("fgsm", "linf", k, 1) for k in linf} | {("pgd", "linf", k, n) for k in linf for n in (10, 20)} | \
        {("mifgsm", "linf", k, 10) for k in (4, 8, 16)} | {("pgd", "l2", e, 20) for e in (0.5, 1.0, 2.0)} | \
        {("random", "linf", k, 0) for k in linf} | {("random", "l2", e, 0) for e in (0.5, 1.0, 2.0)} | \
        {("apgd", "linf", 8, 5), ("square", "linf", 8, 50)}  # restarts 1 and 2 (monotone_restarts); black_box
    assert _points(s) == expected
    assert len(s.points) == len(expected) + 1  # APGD twice
    assert {dict(p.params).get("restarts", 1) for p in s.points if p.attack == "apgd"} == {1, 2}
    _assert_baselines(s)


def test_eps_forms():
    s = parse_suite({"attack": [{"type": "fgsm", "eps": ["8/255", "0.0314", 0.5, 1, " 2/255 "]}]})
    eps = sorted({p.eps for p in s.points if p.attack == "fgsm"})
    assert eps == pytest.approx(sorted([8 / 255, 0.0314, 0.5, 1.0, 2 / 255]), abs=1e-12)
    labels = {p.eps_label for p in s.points if p.attack == "fgsm"}
    assert {"8/255", "2/255", "0.0314", "0.5", "255/255"} == labels
    one = parse_suite({"attack": [{"type": "pgd", "eps": "4/255", "steps": 3}]})  # scalars as well as lists
    assert _points(one) == {("pgd", "linf", 4, 3), ("random", "linf", 4, 0)}


def test_l2_eps_is_not_capped_at_one():
    """An L2 eps bounds the whole image's perturbation (up to ~221 for 3x128x128), so 2.0 is fine for L2."""
    s = parse_suite({"attack": [{"type": "pgd", "norm": "l2", "eps": [0.5, 2.0, "3"], "steps": 5}]})
    assert sorted(p.eps for p in s.points if p.attack == "pgd") == [0.5, 2.0, 3.0]
    with pytest.raises(SuiteError, match="outside"):
        parse_suite({"attack": [{"type": "pgd", "norm": "linf", "eps": 2.0}]})


def test_random_baseline_at_every_eps_of_every_norm():
    s = parse_suite({"attack": [
        {"type": "pgd", "eps": ["2/255", "8/255"], "steps": [3, 7]},
        {"type": "fgsm", "eps": ["4/255", "8/255"]},
        {"type": "mifgsm", "eps": "16/255", "steps": 2, "decay": 0.5},
        {"type": "pgd", "norm": "l2", "eps": [0.25, 1.0], "steps": 2},
        {"type": "random", "eps": "2/255"},  # an explicit baseline is not duplicated
        {"type": "pgd", "eps": ["0"], "steps": 2},  # eps 0 is the clean image: no baseline needed
    ]})
    _assert_baselines(s)
    randoms = {(p.norm, p.eps) for p in s.points if p.attack == "random"}
    assert randoms == {("linf", 2 / 255), ("linf", 4 / 255), ("linf", 8 / 255), ("linf", 16 / 255),
                       ("l2", 0.25), ("l2", 1.0)}
    assert ("pgd", "linf", 0, 2) in _points(s)
    assert {p.steps for p in s.points if p.attack == "pgd" and p.norm == "linf" and p.eps > 0} == {3, 7}
    mi = [p for p in s.points if p.attack == "mifgsm"]
    assert len(mi) == 1 and dict(mi[0].params) == {"decay": 0.5}
    assert s.points[0].attack == "random"  # baselines first, then attacks by family, norm, eps, steps


def test_losses_default_and_override():
    s = parse_suite({"losses": ["classifier", "loss_mask"], "attack": [
        {"type": "fgsm", "eps": "1/255"}, {"type": "fgsm", "eps": "2/255", "losses": "all"}]})
    by_eps = {round(p.eps * 255): p for p in s.points if p.attack == "fgsm"}
    assert by_eps[1].losses == ("loss_classifier", "loss_mask")
    assert len(by_eps[2].losses) == 5
    assert by_eps[1].key.endswith("-classifier+mask") and by_eps[2].key == "fgsm-linf-eps0.007843-s1"


BAD = [  # (suite dict, words the message must contain)
    ({"attack": [{"type": "cw", "eps": "8/255"}]}, ["unknown attack type", "'cw'"]),
    ({"attack": [{"eps": "8/255"}]}, ["unknown attack type", "None"]),
    ({"attack": [{"type": "pgd", "eps": "8/255", "stepz": 3}]}, ["unknown parameter", "stepz"]),
    ({"attack": [{"type": "fgsm", "eps": "8/255", "steps": 3}]}, ["unknown parameter", "steps"]),
    ({"attack": [{"type": "fgsm", "eps": "8"}]}, ["eps", "'8'", "outside [0,1]"]),
    ({"attack": [{"type": "fgsm", "eps": "abc"}]}, ["invalid eps", "'abc'"]),
    ({"attack": [{"type": "fgsm", "eps": 1.5}]}, ["eps", "1.5", "outside [0,1]"]),
    ({"attack": [{"type": "fgsm", "eps": "-1/255"}]}, ["eps", "-1/255"]),
    ({"attack": [{"type": "fgsm", "eps": "1/0"}]}, ["invalid eps", "1/0"]),
    ({"attack": [{"type": "fgsm", "eps": float("nan")}]}, ["eps", "nan"]),
    ({"attack": [{"type": "fgsm", "eps": True}]}, ["invalid eps", "True"]),
    ({"attack": [{"type": "fgsm", "eps": []}]}, ["eps", "empty"]),
    ({"attack": [{"type": "fgsm"}]}, ["missing eps"]),
    ({"attack": [{"type": "pgd", "eps": "8/255", "steps": 0}]}, ["steps", "0"]),
    ({"attack": [{"type": "pgd", "eps": "8/255", "steps": -2}]}, ["steps", "-2"]),
    ({"attack": [{"type": "pgd", "eps": "8/255", "steps": 2.5}]}, ["steps", "2.5"]),
    ({"attack": [{"type": "pgd", "eps": "8/255", "steps": "10"}]}, ["steps", "'10'"]),
    ({"attack": [{"type": "pgd", "eps": "8/255", "steps": True}]}, ["steps", "True"]),
    ({"attack": [{"type": "mifgsm", "eps": "8/255", "steps": []}]}, ["steps", "empty"]),
    ({"attack": [{"type": "pgd", "eps": "8/255", "norm": "l3"}]}, ["norm", "'l3'"]),
    ({"attack": [{"type": "pgd", "eps": "8/255", "rel_stepsize": -1}]}, ["rel_stepsize"]),
    ({"attack": [{"type": "pgd", "eps": "8/255", "rel_stepsize": float("inf")}]}, ["rel_stepsize"]),
    ({"attack": [{"type": "pgd", "eps": "8/255", "random_start": "yes"}]}, ["random_start"]),
    ({"attack": [{"type": "pgd", "eps": "8/255", "losses": ["mask", "dice"]}]}, ["unknown loss", "'dice'"]),
    ({"attack": [{"type": "pgd", "eps": "8/255"}], "atack": []}, ["unknown key", "atack"]),
    ({"attack": [{"type": "pgd", "eps": [0.01, 0.0100000001]}]}, ["share the key", "eps0.010000"]),
    ({"attack": []}, ["at least one [[attack]]"]),
    ({"name": "x"}, ["at least one [[attack]]"]),
    ({"attack": ["pgd"]}, ["attack #1", "must be a table"]),
    ([1, 2], ["top level"]),
]


@pytest.mark.parametrize("data,words", BAD, ids=[str(i) for i in range(len(BAD))])
def test_invalid_suites_raise_suite_error_naming_the_problem(data, words):
    with pytest.raises(SuiteError) as ei:
        parse_suite(data, name="mysuite")
    msg = str(ei.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"
    if isinstance(data, dict):
        assert msg.startswith("suite mysuite: ")


def test_second_attack_table_is_named():
    with pytest.raises(SuiteError, match=r"attack #2.*'bim'"):
        parse_suite({"attack": [{"type": "fgsm", "eps": 0.01}, {"type": "bim", "eps": 0.01}]})


def test_load_suite_errors(tmp_path):
    bad = tmp_path / "broken.toml"
    bad.write_text('name = "broken"\n[[attack]\ntype = "pgd"\n')
    with pytest.raises(SuiteError, match="invalid TOML"):
        load_suite(bad)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(SuiteError, match="invalid TOML"):
        load_suite(binary)
    with pytest.raises(SuiteError, match="no such file"):
        load_suite(tmp_path / "missing.toml")
    with pytest.raises(SuiteError, match="no such file"):
        load_suite("no-such-builtin-suite")
    good = tmp_path / "mine.toml"
    good.write_text('[[attack]]\ntype = "pgd"\neps = ["8/255", "0.0314"]\nsteps = 3\n')
    s = load_suite(good)
    assert s.name == "mine" and len(s.points) == 4


def test_single_attack_suite_from_cli_options():
    s = single_attack_suite("pgd", "2/255,8/255", "5,10", "linf", "classifier,mask")
    assert _points(s) == {("pgd", "linf", e, n) for e in (2, 8) for n in (5, 10)} | \
        {("random", "linf", e, 0) for e in (2, 8)}
    assert s.name == "cli-pgd"
    with pytest.raises(SuiteError, match="--steps must be integers"):
        single_attack_suite("pgd", "8/255", "ten")
    with pytest.raises(SuiteError, match="eps"):
        single_attack_suite("pgd", "8", "1")


def _cli(argv, capsys):
    t = time.perf_counter()
    rc = main(argv)
    elapsed = time.perf_counter() - t
    cap = capsys.readouterr()
    return rc, cap.out, cap.err, elapsed


CLI_BAD = [  # (attack arguments, words in the one-line error)
    (["--attack", "pgd", "--eps", "8", "--steps", "1"], ["'8'", "outside [0,1]"]),
    (["--attack", "pgd", "--eps", "abc"], ["invalid eps", "'abc'"]),
    (["--attack", "fgsm", "--eps", "1.5"], ["1.5", "outside [0,1]"]),
    (["--attack", "pgd", "--eps", "8/255", "--steps", "0"], ["steps", "0"]),
    (["--attack", "pgd", "--eps", "8/255", "--steps", "x"], ["--steps must be integers"]),
    (["--attack", "pgd", "--eps", "8/255", "--losses", "dice"], ["unknown loss", "'dice'"]),
    (["--attack", "pgd"], ["--attack needs --eps"]),
    (["--suite", "quick", "--eps", "8/255"], ["--eps/--steps go with --attack"]),
    (["--suite", "no-such-suite"], ["no such file"]),
]


@pytest.mark.parametrize("args,words", CLI_BAD, ids=[str(i) for i in range(len(CLI_BAD))])
def test_cli_rejects_bad_attack_options_before_any_model_work(tmp_path, capsys, args, words):
    """Exit 2 with one line on stderr. --model and --data name missing files, so the message naming the
    suite problem shows the suite was validated first."""
    argv = ["attack", "--model", str(tmp_path / "missing.pt"), "--data", str(tmp_path / "missing.json"),
            "--images", str(tmp_path), "--out", str(tmp_path / "out")] + args
    rc, out, err, elapsed = _cli(argv, capsys)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("robustseg: error: "), err
    assert "Traceback" not in err and out == ""
    for w in words:
        assert w in lines[0], f"{w!r} not in {lines[0]!r}"
    assert "missing.pt" not in err and "missing.json" not in err
    assert not (tmp_path / "out").exists()
    assert elapsed < 10


BAD_TOML = {
    "unknown_type.toml": ('[[attack]]\ntype = "deepfool"\neps = "8/255"\n', "unknown attack type 'deepfool'"),
    "unknown_param.toml": ('[[attack]]\ntype = "pgd"\neps = "8/255"\nstep = 3\n', "unknown parameter(s) step"),
    "bad_eps.toml": ('[[attack]]\ntype = "pgd"\neps = [8]\n', "outside [0,1]"),
    "bad_steps.toml": ('[[attack]]\ntype = "pgd"\neps = "8/255"\nsteps = [10, 0]\n', "steps must be positive"),
    "invalid.toml": ('[[attack]\ntype = "pgd"\n', "invalid TOML"),
}


@pytest.mark.parametrize("fname", sorted(BAD_TOML))
def test_cli_rejects_bad_suite_files(tmp_path, capsys, fname):
    text, words = BAD_TOML[fname]
    (tmp_path / fname).write_text(text)
    argv = ["attack", "--suite", str(tmp_path / fname), "--model", str(tmp_path / "missing.pt"),
            "--data", str(tmp_path / "missing.json"), "--images", str(tmp_path)]
    rc, out, err, elapsed = _cli(argv, capsys)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and Path(fname).stem in lines[0], err
    assert "Traceback" not in err
    assert elapsed < 10


def test_cli_process_bad_suite_one_line_no_traceback(tmp_path):
    """The real command line, in its own process: exit status 2, one line on stderr."""
    suite = tmp_path / "bad.toml"
    suite.write_text('[[attack]]\ntype = "pgd"\neps = "8/255"\nmomentum = 0.9\n')
    p = subprocess.run([sys.executable, "-m", "robustseg", "attack", "--suite", str(suite),
                        "--model", str(tmp_path / "missing.pt")], capture_output=True, text=True, timeout=120,
                       cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    assert p.stderr.startswith("robustseg: error: suite bad: attack #1 (pgd): unknown parameter(s) momentum")


# ---- property test: whatever it is given, the parser succeeds or raises SuiteError -------------------------

_KEYS = sorted(set().union(*ALLOWED.values()) | {"name", "description", "attack", "decay", "bogus"})
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-10**20, max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
    st.sampled_from(["pgd", "fgsm", "mifgsm", "random", "linf", "l2", "8/255", "0.0314", "1/0", "all", "mask",
                     "classifier", "x/y", "2", "-1/255", "nan", "inf"]),
)
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) |
                       st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=4) | st.integers(), inner,
                                       max_size=4), max_leaves=12)
_entry = st.dictionaries(st.sampled_from(_KEYS) | st.integers(), _values, max_size=6) | st.fixed_dictionaries(
    {"type": st.sampled_from(["pgd", "fgsm", "mifgsm", "random"]) | _scalars,
     "eps": _values},
    optional={k: _values for k in ("norm", "steps", "rel_stepsize", "abs_stepsize", "random_start", "decay",
                                   "losses")})
_good_eps = st.sampled_from(["1/255", "8/255", "0.0314", 0, 0.5, 1, 2.0])
_good_entry = st.fixed_dictionaries(  # mostly-valid tables, so that the success path is exercised too
    {"type": st.sampled_from(["pgd", "fgsm", "mifgsm", "random"]),
     "eps": _good_eps | st.lists(_good_eps, min_size=1, max_size=3)},
    optional={"norm": st.sampled_from(["linf", "l2"]),
              "steps": st.integers(1, 20) | st.lists(st.integers(1, 20), min_size=1, max_size=2),
              "losses": st.sampled_from(["all", "mask", ["classifier", "box_reg"]])})
_suite = st.one_of(
    _values,
    st.fixed_dictionaries({"attack": st.lists(_entry | _good_entry, max_size=3) | _values},
                          optional={"name": _values, "description": _values, "losses": _values}),
    st.fixed_dictionaries({"attack": st.lists(_good_entry, min_size=1, max_size=3)},
                          optional={"name": st.text(max_size=8), "losses": st.sampled_from(["all", "mask"])}),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_suite)
def test_parser_only_ever_raises_suite_error(data):
    try:
        s = parse_suite(data)
    except SuiteError as e:
        assert str(e)
        return
    assert s.points
    for p in s.points:
        assert p.attack in ALLOWED and p.norm in ("linf", "l2")
        assert p.eps >= 0 and (p.norm == "l2" or p.eps <= 1) and p.eps == p.eps
        if p.attack in ("pgd", "mifgsm"):
            assert isinstance(p.steps, int) and p.steps >= 1
        hash(p)
        assert p.key and p.eps_label
    assert len({p.key for p in s.points}) == len(s.points)  # a key names a predictions file: unique
    _assert_baselines(s)
