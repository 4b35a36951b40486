"""Attack families, one module each, one call: ``attack(model, images, targets, epsilons=[...])``."""
from .base import NORMS, Attack
from .fgsm import FGSM
from .mifgsm import MIFGSM
from .noise import RandomNoise
from .objectives import LOSS_NAMES, DetectorLoss, resolve_losses
from .pgd import PGD

ATTACKS = {"fgsm": FGSM, "pgd": PGD, "mifgsm": MIFGSM, "random": RandomNoise}


def attack(model, images, targets, *, kind: str = "pgd", eps: float = 8 / 255, norm: str = "linf", steps: int = 10,
           losses=None, seed: int = 0, **params):
    """Notebook entry point: adversarial versions of ``images`` for one eps. ``model`` may be a LoadedModel."""
    import torch
    model = getattr(model, "model", model)
    cls = ATTACKS[kind]
    kwargs = {"norm": norm, **params}
    if kind in ("pgd", "mifgsm"):
        kwargs["steps"] = steps
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    return cls(**kwargs)(model, images, targets, [eps], DetectorLoss(resolve_losses(losses)), gen)[0]


__all__ = ["NORMS", "Attack", "FGSM", "MIFGSM", "RandomNoise", "PGD", "ATTACKS", "LOSS_NAMES", "DetectorLoss",
           "resolve_losses", "attack"]
