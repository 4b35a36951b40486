"""Attack suites: TOML files in ``attacks/`` turned into a plan of attack points, validated before any work.

Schema (see docs/suites.md)::

    name = "quick"                      # optional, defaults to the file name
    description = "..."                 # optional
    losses = "all"                      # optional default for every attack: all | [classifier, mask, ...]
    ensemble = true                     # optional: per eps, a worst-case "robust" point over the gradient
                                        # attacks at that eps (docs/robust.md)

    [[attack]]
    type = "pgd"                        # fgsm | pgd | apgd | mifgsm | square | random
    norm = "linf"                       # linf (default) | l2
    eps = ["1/255", "8/255"]            # [0,1] pixel units; strings like "8/255" or numbers
    steps = [10, 20]                    # pgd / mifgsm only; one point per (eps, steps)
    rel_stepsize = 2.5                  # pgd: step = rel_stepsize * eps / steps
    random_start = true                 # pgd
    decay = 1.0                         # mifgsm momentum
    restarts = 1                        # apgd: random restarts (steps = gradient evaluations per restart)
    rho = 0.75                          # apgd: step-halving threshold
    p_init = 0.05                       # square: the square's initial area fraction (steps = queries)
    losses = ["classifier", "mask"]     # overrides the suite default
    objective = "gt"                    # gt | pseudo | vanish | fabricate | mislabel | mask (docs/objectives.md)
    target_class = "next"               # mislabel only: "next" (label l -> l+1) or a class name

    [[attack]]
    type = "foolbox"                    # any foolbox attack on the objects (docs/objectives.md)
    attack = "LinfPGD"                  # foolbox.attacks.<name>
    eps = ["2/255", "8/255"]
    options = { steps = 10 }            # keyword arguments of the foolbox attack

The clean pass and a same-norm random-noise baseline at every eps are always added.
"""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .attacks.objectives import OBJECTIVES, PLACEHOLDER_NAMES, resolve_losses
from .errors import RobustsegError, SuiteError
from .fileio import read_toml
from .utils import parse_eps

_COMMON = {"type", "norm", "eps", "losses", "objective", "target_class"}
ALLOWED = {
    "fgsm": _COMMON,
    "random": {"type", "norm", "eps"},
    "pgd": _COMMON | {"steps", "rel_stepsize", "abs_stepsize", "random_start"},
    "mifgsm": _COMMON | {"steps", "decay"},
    "apgd": _COMMON | {"steps", "restarts", "rho"},  # steps: gradient evaluations per restart
    "square": {"type", "norm", "eps", "steps", "p_init", "objective"},  # black-box; steps: queries per image
    "foolbox": {"type", "attack", "eps", "options"},
}
TOP_LEVEL = {"name", "description", "losses", "ensemble", "attack"}
TARGETED = ("mislabel", "mislabel-margin")  # the objectives that take a target_class
SQUARE_OBJECTIVES = ("gt", "pseudo", "vanish")  # what square's detection score can match detections against
REPO_SUITES = Path(__file__).resolve().parent.parent / "attacks"


@dataclass(frozen=True)
class AttackPoint:
    """One point of a sweep: an attack family at one eps and step count, with its fixed hyper-parameters."""
    attack: str
    norm: str = "linf"
    eps: float = 0.0
    steps: int = 0
    losses: tuple[str, ...] = ()
    params: tuple[tuple[str, Any], ...] = ()
    objective: str = "gt"
    target_class: str | None = None
    seed: int = 0  # which repetition under --seeds N (0..N-1): its own random draws, derived from its key

    @property
    def key(self) -> str:
        """A stable, file-name-safe id, e.g. ``pgd-linf-eps0.031373-s10`` (``-seed2`` for a repetition)."""
        extra = "".join(f"-{k}{v}" for k, v in self.params)
        loss = "" if not self.losses or set(self.losses) == set(_all_losses()) else \
            "-" + "+".join(n.removeprefix("loss_") for n in self.losses)
        obj = "" if self.objective == "gt" else f"-{self.objective}"
        if self.target_class not in (None, "next"):
            obj += "-to_" + "".join(c if c.isalnum() else "_" for c in str(self.target_class))
        rep = f"-seed{self.seed}" if self.seed else ""
        return f"{self.attack}-{self.norm}-eps{self.eps:.6f}-s{self.steps}{extra}{loss}{obj}{rep}"

    @property
    def eps_label(self) -> str:
        k = self.eps * 255
        return f"{round(k)}/255" if self.norm == "linf" and abs(k - round(k)) < 1e-6 and self.eps else f"{self.eps:g}"

    def as_dict(self) -> dict:
        d = asdict(self)
        d["params"] = dict(self.params)
        d["losses"] = list(self.losses)
        d["key"], d["eps_label"] = self.key, self.eps_label
        return d


def _all_losses():
    return resolve_losses("all")


@dataclass
class Suite:
    name: str
    description: str = ""
    points: list[AttackPoint] = field(default_factory=list)
    source: str | None = None
    ensemble: bool = False  # a worst-case point per (norm, eps) over its gradient attacks (kinds/ensemble.py)

    def as_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "source": self.source,
                "ensemble": self.ensemble, "points": [p.as_dict() for p in self.points]}


def _as_list(v) -> list:
    return v if isinstance(v, list) else [v]


def parse_suite(data: dict, name: str = "suite", source: str | None = None) -> Suite:
    """Validate a suite dict (as read from TOML) into a plan. Raises SuiteError naming the first bad field."""
    if not isinstance(data, dict):
        raise SuiteError(f"suite {name}: top level must be a table")
    unknown = set(data) - TOP_LEVEL
    if unknown:
        if unknown & {"kinds", "universal", "per-image", "per-object", "eot"}:
            raise SuiteError(f"suite {source or name} is a patch suite: run it with robustseg patch --suite "
                             f"{source or name}")
        raise SuiteError(f"suite {name}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; allowed: "
                         f"{', '.join(sorted(TOP_LEVEL))}")
    entries = data.get("attack", [])
    if not isinstance(entries, list) or not entries:
        raise SuiteError(f"suite {name}: needs at least one [[attack]] table")
    default_losses = data.get("losses", "all")
    ensemble = data.get("ensemble", False)
    if not isinstance(ensemble, bool):
        raise SuiteError(f"suite {name}: ensemble must be true or false, not {ensemble!r}")
    points: list[AttackPoint] = []
    for i, a in enumerate(entries):
        where = f"suite {name}: attack #{i + 1}"
        if not isinstance(a, dict):
            raise SuiteError(f"{where}: must be a table")
        kind = a.get("type")
        if not isinstance(kind, str) or kind not in ALLOWED:
            raise SuiteError(f"{where}: unknown attack type {kind!r}; choose from {', '.join(ALLOWED)}")
        bad = set(a) - ALLOWED[kind]
        if bad:
            raise SuiteError(f"{where} ({kind}): unknown parameter(s) {', '.join(sorted(map(str, bad)))}; "
                             f"allowed: {', '.join(sorted(ALLOWED[kind]))}")
        if kind == "foolbox":
            points += _foolbox_points(a, where)
            continue
        points += _entry_points(a, kind, where, default_losses)
    points = _with_baselines(points)
    seen: dict[str, AttackPoint] = {}
    for p in points:  # the key names the point's predictions file and its metrics rows: it must be unique
        if p.key in seen:
            raise SuiteError(f"suite {name}: two points share the key {p.key} (eps {seen[p.key].eps!r} and "
                             f"{p.eps!r}); eps values must differ by at least 1e-6")
        seen[p.key] = p
    return Suite(str(data.get("name", name)), str(data.get("description", "")), points, source, ensemble)


def _entry_points(a: dict, kind: str, where: str, default_losses) -> list[AttackPoint]:
    """The points of one eps-swept [[attack]] table (every eps x steps), its values checked."""
    norm = a.get("norm", "linf")
    if not isinstance(norm, str) or norm not in ("linf", "l2"):
        raise SuiteError(f"{where}: norm must be linf or l2, not {norm!r}")
    if "eps" not in a:
        raise SuiteError(f"{where}: missing eps")
    objective = a.get("objective", "gt")
    if objective not in OBJECTIVES:
        raise SuiteError(f"{where}: unknown objective {objective!r}; choose from {', '.join(OBJECTIVES)}")
    target_class = a.get("target_class")
    if target_class is not None and (objective not in TARGETED or not isinstance(target_class, str)):
        raise SuiteError(f"{where}: target_class (a class name or \"next\") goes with objective = \"mislabel\" "
                         f"or \"mislabel-margin\"")
    if target_class in PLACEHOLDER_NAMES:  # torchvision's empty COCO slots: no model can be pushed there
        raise SuiteError(f"{where}: target_class {target_class!r} is a placeholder slot, not a class")
    try:
        epss = [parse_eps(e, norm) for e in _as_list(a["eps"])]
        losses = resolve_losses(a.get("losses", default_losses))
    except RobustsegError as e:
        raise SuiteError(f"{where}: {e}") from None
    if not epss:
        raise SuiteError(f"{where}: eps is an empty list")
    if kind == "square" and (norm != "linf" or objective not in SQUARE_OBJECTIVES):
        raise SuiteError(f"{where}: square runs on norm linf with objective {', '.join(SQUARE_OBJECTIVES)}")
    iterative = kind in ("pgd", "mifgsm", "apgd", "square")
    steps_list = _as_list(a.get("steps", 10)) if iterative else [1 if kind == "fgsm" else 0]
    if not steps_list:
        raise SuiteError(f"{where}: steps is an empty list")
    for s in steps_list:
        if not isinstance(s, int) or isinstance(s, bool) or (iterative and s < 1):
            raise SuiteError(f"{where}: steps must be positive integers, got {s!r}")
    params = []
    for k in sorted(set(a) - _COMMON - {"steps"}):
        v = a[k]
        if k in ("rel_stepsize", "abs_stepsize", "decay"):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v <= sys.float_info.max:
                raise SuiteError(f"{where}: {k} must be a finite non-negative number, got {v!r}")
            v = float(v)
        elif k == "random_start" and not isinstance(v, bool):
            raise SuiteError(f"{where}: random_start must be true or false")
        elif k == "restarts" and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise SuiteError(f"{where}: restarts must be a positive integer, got {v!r}")
        elif k in ("rho", "p_init"):  # apgd's step-halving threshold, square's initial area fraction
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 < v <= 1:
                raise SuiteError(f"{where}: {k} must be a number in (0, 1], got {v!r}")
            v = float(v)
        params.append((k, v))
    return [AttackPoint(kind, norm, eps, int(s), losses, tuple(params), objective, target_class)
            for eps in epss for s in steps_list]


def _foolbox_points(a: dict, where: str) -> list[AttackPoint]:
    from .attacks.foolbox_bridge import check_foolbox_attack
    name, options = a.get("attack"), a.get("options", {})
    if not isinstance(options, dict):
        raise SuiteError(f"{where}: options must be a table of the foolbox attack's keyword arguments")
    for k, v in options.items():  # plain values only: they go into the point's key and its hash
        flat = v if isinstance(v, list) else [v]
        if not all(isinstance(x, (str, int, float, bool)) for x in flat):
            raise SuiteError(f"{where}: foolbox option {k!r} must be a number, string, boolean or a list of them")
    steps = options.get("steps", 0)
    if "steps" in options and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
        raise SuiteError(f"{where}: foolbox option steps must be a positive integer, got {steps!r}")
    try:
        norm = check_foolbox_attack(name, options)
        epss = [parse_eps(e, norm) for e in _as_list(a.get("eps", []))]
    except RobustsegError as e:
        raise SuiteError(f"{where}: {e}") from None
    if not epss:
        raise SuiteError(f"{where}: missing eps")
    opts = tuple(sorted((str(k), v if not isinstance(v, list) else tuple(v)) for k, v in options.items()))
    return [AttackPoint("foolbox", norm, eps, steps,
                        params=(("fb", name),) + opts) for eps in epss]


def _with_baselines(points: list[AttackPoint]) -> list[AttackPoint]:
    """Add the same-norm random baseline at every eps that lacks one; drop exact duplicates; eps 0 is clean."""
    have = {(p.norm, p.eps) for p in points if p.attack == "random"}
    extra = {AttackPoint("random", p.norm, p.eps) for p in points
             if p.attack not in ("random", "foolbox") and p.eps > 0 and (p.norm, p.eps) not in have}
    points = [AttackPoint("random", p.norm, p.eps) if p.attack == "random" else p for p in points]
    out = list(dict.fromkeys(points + sorted(extra, key=lambda p: (p.norm, p.eps))))
    return sorted(out, key=lambda p: (p.attack != "random", p.attack, p.norm, p.eps, p.steps))


def with_seeds(points: list[AttackPoint], seeds: int) -> list[AttackPoint]:
    """``--seeds N``: every point with random draws (all but foolbox's) repeated as seeds 1..N-1 after the
    originals (seed 0), each repetition with its own draws (its key, and so its derived seeds, differ)."""
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise RobustsegError(f"seeds must be a positive integer, got {seeds!r}")
    return points + [replace(p, seed=k) for k in range(1, seeds) for p in points if p.attack != "foolbox"]


def load_suite(path: str | Path | None = None) -> Suite:
    """Read a suite file; ``None`` or a bare name (``quick``, ``standard``) looks in the repo's ``attacks/``."""
    if path is None:
        path = "quick"
    p = Path(path)
    if not p.suffix and not p.exists():
        p = REPO_SUITES / f"{path}.toml"
    if not p.exists():
        raise SuiteError(f"suite {path}: no such file (built-in suites live in {REPO_SUITES})")
    data = read_toml(p, "suite", error=SuiteError)  # a directory, unreadable, not UTF-8, invalid, too deep
    return parse_suite(data, p.stem, str(p))


def single_attack_suite(kind: str, eps: str, steps: str | None = None, norm: str = "linf",
                        losses: str | None = None) -> Suite:
    """The suite for ``--attack pgd --eps 2/255,8/255 --steps 10`` on the command line."""
    entry: dict[str, Any] = {"type": kind, "norm": norm, "eps": [e for e in eps.split(",") if e.strip()]}
    if steps:
        try:
            entry["steps"] = [int(s) for s in steps.split(",")]
        except ValueError:
            raise SuiteError(f"--steps must be integers, got {steps!r}") from None
    if losses:
        entry["losses"] = losses
    return parse_suite({"attack": [entry]}, name=f"cli-{kind}")
