"""attacks/patch.toml: what ``robustseg patch`` runs. Its own schema (docs/patches.md); every key is checked and a
bad one is a one-line SuiteError naming the file, the table and the key."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from ..attacks.objectives import OBJECTIVES, resolve_losses
from ..errors import SuiteError
from ..fileio import read_toml
from ..suites import REPO_SUITES
from .apply import EOT, POLICIES
from .physical import COMPONENTS, PhysicalEOT
from .sticker import PLACEMENTS

SUITE_FILE = REPO_SUITES / "patch.toml"
KINDS = ("universal", "per-image", "per-object", "physical")
BASELINES = ("random", "grey", "natural")
PATCH_OBJECTIVES = tuple(o for o in OBJECTIVES if o != "pseudo")  # pseudo needs clean detections per image

DEFAULTS: dict = {
    "name": "patch",
    "description": "",
    "kinds": ["universal", "per-image", "per-object"],  # physical: attacks/physical.toml
    "objective": "gt",
    "losses": "all",
    "target_class": "next",
    "baselines": ["random", "grey"],
    "universal": {"side": 0.3, "resolution": 32, "steps": 300, "batch_size": 4, "lr": 0.03,
                  "policy": "anywhere", "train_images": 64, "save_every": 25},
    "eot": {"scale": [0.8, 1.0], "rotation": 20.0, "brightness": 0.1, "contrast": [0.8, 1.2]},
    "per-image": {"side": 0.2, "steps": 30, "lr": 0.05, "location": "chosen", "policy": "anywhere"},
    "per-object": {"relative_side": 0.3, "steps": 30, "lr": 0.05},
    "physical": {"placement": "on-object", "cover": 0.2, "side": 0.25, "resolution": 32, "steps": 300,
                 "batch_size": 4, "lr": 0.03, "train_images": 64, "save_every": 25, "nps_weight": 0.1,
                 "tv_weight": 0.1, "colours": "default", "print_width_cm": 15.0, "train_eot": list(COMPONENTS),
                 "components": ["none", *COMPONENTS]},
    "physical-eot": {"tilt": 50.0, "rotation": 30.0, "scale": [0.7, 1.0], "brightness": 0.15,
                     "contrast": [0.7, 1.2], "temperature": 0.1, "blur": 1.0, "noise": 0.03, "jpeg": [50.0, 95.0]},
}


@dataclass
class PatchSuite:
    cfg: dict            # DEFAULTS overridden by the file, validated
    source: str | None = None

    def __getitem__(self, key):
        return self.cfg[key]

    @property
    def eot(self) -> EOT:
        e = self.cfg["eot"]
        return EOT(tuple(e["scale"]), float(e["rotation"]), float(e["brightness"]), tuple(e["contrast"]))

    @property
    def physical_eot(self) -> PhysicalEOT:
        e = self.cfg["physical-eot"]
        return PhysicalEOT(float(e["tilt"]), float(e["rotation"]), tuple(e["scale"]), float(e["brightness"]),
                           tuple(e["contrast"]), float(e["temperature"]), float(e["blur"]), float(e["noise"]),
                           tuple(e["jpeg"]))

    def as_dict(self) -> dict:
        return {**copy.deepcopy(self.cfg), "source": self.source}


def _num(where: str, v, lo: float, hi: float, integer: bool = False, lo_open: bool = False):
    ok_type = isinstance(v, int) if integer else isinstance(v, (int, float))
    if isinstance(v, bool) or not ok_type or v < lo or v > hi or (lo_open and v == lo):
        kind = "an integer" if integer else "a number"
        raise SuiteError(f"{where} must be {kind} in {'(' if lo_open else '['}{lo:g}, {hi:g}], not {v!r}")
    return v


def _range(where: str, v, lo: float, hi: float) -> list[float]:
    if not (isinstance(v, list) and len(v) == 2):
        raise SuiteError(f"{where} must be a [low, high] pair, not {v!r}")
    a, b = (_num(where, x, lo, hi) for x in v)
    if a > b:
        raise SuiteError(f"{where}: low {a} is above high {b}")
    return [float(a), float(b)]


def _choice(where: str, v, allowed) -> str:
    if v not in allowed:
        raise SuiteError(f"{where} must be one of {', '.join(allowed)}, not {v!r}")
    return v


def _names(where: str, v, allowed) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise SuiteError(f"{where} must be a list of names from {', '.join(allowed)}, not {v!r}")
    for x in v:
        _choice(where, x, allowed)
    return list(dict.fromkeys(v))


def parse_patch_suite(data: dict, source: str = "patch suite") -> PatchSuite:
    cfg = copy.deepcopy(DEFAULTS)
    for key, value in data.items():
        if key not in cfg:
            raise SuiteError(f"{source}: unknown key {key!r} (known: {', '.join(cfg)})")
        if isinstance(cfg[key], dict):
            if not isinstance(value, dict):
                raise SuiteError(f"{source}: {key!r} must be a table [{key}]")
            unknown = sorted(set(value) - set(cfg[key]))
            if unknown:
                raise SuiteError(f"{source}: unknown key {unknown[0]!r} in [{key}] (known: {', '.join(cfg[key])})")
            cfg[key].update(value)
        else:
            cfg[key] = value
    w = source
    if not isinstance(cfg["name"], str) or not isinstance(cfg["description"], str):
        raise SuiteError(f"{w}: name and description must be strings")
    cfg["kinds"] = _names(f"{w}: kinds", cfg["kinds"], KINDS)
    cfg["baselines"] = _names(f"{w}: baselines", cfg["baselines"], BASELINES)
    _choice(f"{w}: objective", cfg["objective"], PATCH_OBJECTIVES)
    try:
        resolve_losses(cfg["losses"])
    except Exception as e:
        raise SuiteError(f"{w}: {e}") from None
    if not isinstance(cfg["target_class"], str):
        raise SuiteError(f"{w}: target_class must be 'next' or a class name, not {cfg['target_class']!r}")
    u = cfg["universal"]
    _num(f"{w}: [universal] side", u["side"], 0, 1, lo_open=True)
    _num(f"{w}: [universal] resolution", u["resolution"], 2, 1024, integer=True)
    _num(f"{w}: [universal] steps", u["steps"], 0, 10 ** 7, integer=True)
    _num(f"{w}: [universal] batch_size", u["batch_size"], 1, 1024, integer=True)
    _num(f"{w}: [universal] lr", u["lr"], 0, 10, lo_open=True)
    _num(f"{w}: [universal] train_images", u["train_images"], 0, 10 ** 7, integer=True)
    _num(f"{w}: [universal] save_every", u["save_every"], 1, 10 ** 7, integer=True)
    _choice(f"{w}: [universal] policy", u["policy"], POLICIES)
    e = cfg["eot"]
    e["scale"] = _range(f"{w}: [eot] scale", e["scale"], 0.05, 1.0)
    _num(f"{w}: [eot] rotation", e["rotation"], 0, 180)
    _num(f"{w}: [eot] brightness", e["brightness"], 0, 1)
    e["contrast"] = _range(f"{w}: [eot] contrast", e["contrast"], 0, 10)
    p = cfg["per-image"]
    _num(f"{w}: [per-image] side", p["side"], 0, 1, lo_open=True)
    _num(f"{w}: [per-image] steps", p["steps"], 0, 10 ** 6, integer=True)
    _num(f"{w}: [per-image] lr", p["lr"], 0, 10, lo_open=True)
    _choice(f"{w}: [per-image] policy", p["policy"], POLICIES)
    loc = p["location"]
    if loc != "chosen" and not (isinstance(loc, list) and len(loc) == 2
                                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1
                                        for v in loc)):
        raise SuiteError(f"{w}: [per-image] location must be \"chosen\" or [x, y] centre fractions in [0, 1], "
                         f"not {loc!r}")
    o = cfg["per-object"]
    _num(f"{w}: [per-object] relative_side", o["relative_side"], 0, 1, lo_open=True)
    _num(f"{w}: [per-object] steps", o["steps"], 0, 10 ** 6, integer=True)
    _num(f"{w}: [per-object] lr", o["lr"], 0, 10, lo_open=True)
    _check_physical(w, cfg["physical"], cfg["physical-eot"])
    return PatchSuite(cfg, source)


def _check_physical(w: str, p: dict, e: dict) -> None:
    _choice(f"{w}: [physical] placement", p["placement"], PLACEMENTS)
    _num(f"{w}: [physical] cover", p["cover"], 0, 1, lo_open=True)
    _num(f"{w}: [physical] side", p["side"], 0, 1, lo_open=True)
    _num(f"{w}: [physical] resolution", p["resolution"], 2, 1024, integer=True)
    _num(f"{w}: [physical] steps", p["steps"], 0, 10 ** 7, integer=True)
    _num(f"{w}: [physical] batch_size", p["batch_size"], 1, 1024, integer=True)
    _num(f"{w}: [physical] lr", p["lr"], 0, 10, lo_open=True)
    _num(f"{w}: [physical] train_images", p["train_images"], 0, 10 ** 7, integer=True)
    _num(f"{w}: [physical] save_every", p["save_every"], 1, 10 ** 7, integer=True)
    _num(f"{w}: [physical] nps_weight", p["nps_weight"], 0, 10 ** 3)
    _num(f"{w}: [physical] tv_weight", p["tv_weight"], 0, 10 ** 3)
    _num(f"{w}: [physical] print_width_cm", p["print_width_cm"], 0, 10 ** 4, lo_open=True)
    if not isinstance(p["colours"], str) or not p["colours"]:
        raise SuiteError(f"{w}: [physical] colours must be \"default\" or the path of an r,g,b CSV, not "
                         f"{p['colours']!r}")
    p["train_eot"] = _names(f"{w}: [physical] train_eot", p["train_eot"], COMPONENTS)
    p["components"] = _names(f"{w}: [physical] components", p["components"], ("none", *COMPONENTS))
    _num(f"{w}: [physical-eot] tilt", e["tilt"], 0, 85)
    _num(f"{w}: [physical-eot] rotation", e["rotation"], 0, 180)
    e["scale"] = _range(f"{w}: [physical-eot] scale", e["scale"], 0.05, 1.0)
    _num(f"{w}: [physical-eot] brightness", e["brightness"], 0, 1)
    e["contrast"] = _range(f"{w}: [physical-eot] contrast", e["contrast"], 0, 10)
    _num(f"{w}: [physical-eot] temperature", e["temperature"], 0, 1)
    _num(f"{w}: [physical-eot] blur", e["blur"], 0, 10)
    _num(f"{w}: [physical-eot] noise", e["noise"], 0, 1)
    e["jpeg"] = _range(f"{w}: [physical-eot] jpeg", e["jpeg"], 1, 100)


def load_patch_suite(path: str | Path | None = None) -> PatchSuite:
    """A patch suite file; None: attacks/patch.toml (built-in defaults if it is missing)."""
    if path is None and not SUITE_FILE.is_file():
        return PatchSuite(copy.deepcopy(DEFAULTS), "built-in defaults")
    p = Path(path) if path is not None else SUITE_FILE
    if not p.is_file() and not p.suffix and (REPO_SUITES / f"{p}.toml").is_file():
        p = REPO_SUITES / f"{p}.toml"  # a built-in name, as `robustseg attack --suite quick`
    data = read_toml(p, "patch suite", error=SuiteError)
    return parse_patch_suite(data, f"patch suite {p}")


def with_physical_options(suite: PatchSuite, apply=None, **values) -> PatchSuite:
    """The suite with [physical] values given on the command line (None: keep the suite's); refused where no
    physical patch runs, so that an option is never silently ignored."""
    given = {k: v for k, v in values.items() if v is not None}
    if not given:
        return suite
    flags = ", ".join(f"--{k.replace('_', '-')}" for k in given)
    physical_apply = apply is not None and (str(apply).lower().endswith(".png") or _kind_of(apply) == "physical")
    if "physical" not in suite["kinds"] and not physical_apply:
        raise SuiteError(f"{flags}: only for the physical patch; run it with --suite physical (or a suite whose "
                         f"kinds include \"physical\")")
    width = given.get("print_width_cm")
    if width is not None and (isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0):
        raise SuiteError(f"--print-width-cm must be a positive number of centimetres, not {width!r}")
    cfg = copy.deepcopy(suite.cfg)
    cfg["physical"].update(given)
    return parse_patch_suite(cfg, suite.source)


def _kind_of(saved) -> str:
    from .files import load_patch_file  # a bad file is its one-line error here, as it would be later
    return load_patch_file(saved).get("kind", "universal")
