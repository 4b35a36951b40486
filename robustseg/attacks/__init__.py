"""Attack families, one module each, one call: ``attack(model, images, targets, epsilons=[...])``."""
from .apgd import APGD
from .base import NORMS, Attack
from .fgsm import FGSM
from .mifgsm import MIFGSM
from .noise import RandomNoise
from .objectives import LOSS_NAMES, DetectorLoss, resolve_losses
from .pgd import PGD
from .square import Square

ATTACKS = {"fgsm": FGSM, "pgd": PGD, "mifgsm": MIFGSM, "random": RandomNoise, "apgd": APGD, "square": Square}
ITERATIVE = ("pgd", "mifgsm", "apgd", "square")  # the families that take ``steps`` (square: queries)


def attack(model, images, targets, *, kind: str = "pgd", eps: float = 8 / 255, norm: str = "linf", steps: int = 10,
           losses=None, seed: int = 0, **params):
    """Notebook entry point: adversarial versions of ``images`` for one eps. ``model`` may be a LoadedModel."""
    import torch
    model = getattr(model, "model", model)
    cls = ATTACKS[kind]
    kwargs = {"norm": norm, **params}
    if kind in ITERATIVE:
        kwargs["steps"] = steps
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    return cls(**kwargs)(model, images, targets, [eps], DetectorLoss(resolve_losses(losses)), gen)[0]


__all__ = ["NORMS", "Attack", "APGD", "FGSM", "MIFGSM", "RandomNoise", "PGD", "Square", "ATTACKS", "ITERATIVE", "LOSS_NAMES",
           "DetectorLoss", "resolve_losses", "attack"]
