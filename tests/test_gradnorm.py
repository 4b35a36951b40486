"""robustseg gradnorm: per-image L1/L2/Linf input-gradient norms of every loss component, clean and adversarial."""
from __future__ import annotations

import math

import pandas as pd
import torch

from robustseg.attacks.objectives import LOSS_NAMES
from robustseg.cli import main as cli_main
from robustseg.data.coco import CocoDataset
from robustseg.gradnorm import COMPONENTS, component_gradients
from robustseg.models import attack_mode, load_model


def test_cli_writes_all_components_and_norms(tiny_checkpoint, synth_data, tmp_path):
    ann, images = synth_data
    out = tmp_path / "gn"
    assert cli_main(["gradnorm", "--model", str(tiny_checkpoint), "--data", str(ann), "--images", str(images),
                     "--limit", "3", "--min-size", "64", "--max-size", "64", "--adv", "pgd", "--steps", "1",
                     "--out", str(out)]) == 0
    df = pd.read_csv(out / "gradnorms.csv")
    assert list(df.columns) == ["image_id", "checkpoint", "component", "condition", "l1", "l2", "linf"]
    assert set(df.component) == set(COMPONENTS) and set(df.condition) == {"clean", "adv"}
    assert len(df) == 3 * len(COMPONENTS) * 2 and df.image_id.nunique() == 3
    for n in ("l1", "l2", "linf"):
        assert (df[n] > 0).all() and df[n].map(math.isfinite).all(), df[df[n] <= 0]
    assert ((df.linf <= df.l2) & (df.l2 <= df.l1)).all()  # norms of one vector are ordered

    s = pd.read_csv(out / "gradnorms_summary.csv")
    assert len(s) == len(COMPONENTS) * 2 and (s.images == 3).all()
    clean_l1 = df[(df.condition == "clean") & (df.component == "total")].l1
    row = s[(s.condition == "clean") & (s.component == "total")].iloc[0]
    assert math.isclose(row.l1_median, clean_l1.median(), rel_tol=1e-9)
    assert math.isclose(row.l1_p90, clean_l1.quantile(0.9), rel_tol=1e-9)


def test_total_is_the_gradient_of_the_summed_loss(tiny_checkpoint, synth_data):
    lm = load_model(tiny_checkpoint, min_size=64, max_size=64)
    ds = CocoDataset(*synth_data, category_ids=lm.category_ids)
    img, tgt = ds.load_image(0), ds.target(0)
    torch.manual_seed(0)
    grads = component_gradients(lm.model, img, tgt)
    x = img.clone().requires_grad_(True)
    with attack_mode(lm.model):
        torch.manual_seed(0)  # the same sampler draws
        parts = lm.model([x], [tgt])
        total = sum(parts[k] for k in LOSS_NAMES)
        (g,) = torch.autograd.grad(total, x)
    assert torch.allclose(grads["total"], g, rtol=1e-4, atol=1e-7)
    assert not lm.model.training and all(p.grad is None for p in lm.model.parameters())
