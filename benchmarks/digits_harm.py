"""Harm and detection on the digits: deep S4D classifiers, crafted clean-label poisons.

Prints two tables.

Harm: for every benchmark seed (a split of scikit-learn's digits and the attacker's draws)
and every attack, victims retrained from their own seeds on the clean and on the poisoned
training set: accuracy on the held-out test split (mean and 95% t-interval over victims),
and for targeted attacks the share of victims that put the target in the adversarial
class (95% Wilson interval) and the target's cross-entropy (geometric mean).

Audit: for every benchmark seed, ``make_digits_benchmark`` (the data set of
``auditor make-benchmark --kind digits``) audited with the default strategy, beside every
baseline screen used alone (the screens flag their top k, k = the number of poisons):
precision, recall, AUROC, models trained and seconds; then models retrained with all data
and without the flagged set (fresh seeds): target loss and success, trusted-split accuracy.

    python benchmarks/digits_harm.py                       # all seeds, both tables
    python benchmarks/digits_harm.py --part harm --seeds 0
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from scipy import stats

from auditor.engine import run_audit
from auditor.config import AuditConfig
from auditor.crafting import CraftConfig, craft
from auditor.data import validate_arrays
from auditor.deep import DeepSpec, DeepTrainConfig, evaluate, train_many
from auditor.digits import digits_attack, make_digits_benchmark, split_digits
from auditor.report import detection_metrics, ranking_metrics

SPEC, TRAIN = DeepSpec(), DeepTrainConfig()


def attacks() -> list[tuple[str, CraftConfig]]:
    """From the paper's budget up to the benchmark's: (label, config)."""
    gm = {"steps": 200, "late_penalty": 1.0, "surrogates": 2}
    return [
        ("GM untargeted 10% eps 16/255 (paper)", CraftConfig(mode="untargeted", fraction=0.1, eps=16 / 255, **gm)),
        ("GM untargeted 20% eps 64/255", CraftConfig(mode="untargeted", fraction=0.2, eps=64 / 255, **gm)),
        ("GM targeted 5% eps 16/255 (paper)", CraftConfig(mode="targeted", fraction=0.05, eps=16 / 255, targets=1, **gm)),
        ("GM targeted 5% eps 1", CraftConfig(mode="targeted", fraction=0.05, eps=1.0, targets=1, **gm)),
        ("GM from collision, 5%, last 32, eps 0.5",
         CraftConfig(mode="targeted", fraction=0.05, eps=0.5, targets=1, start="collision", late=32, **gm)),
        ("collision 5% last 32 eps 0.5", digits_attack(eps=0.5, late=32)),
        ("collision 5% last 48 eps 1 (benchmark)", digits_attack()),
    ]


def t_interval(values) -> tuple[float, float, float]:
    v = np.asarray(values, float)
    if len(v) < 2 or v.std() == 0:
        return float(v.mean()), float(v.mean()), float(v.mean())
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean()), float(v.mean() - half), float(v.mean() + half)


def wilson(k: int, n: int) -> tuple[float, float, float]:
    if n == 0:
        return math.nan, math.nan, math.nan
    z, p = 1.959964, k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return p, max(0.0, centre - half), min(1.0, centre + half)


def fmt(t) -> str:
    return f"{t[0]:.3f} [{t[1]:.3f}, {t[2]:.3f}]"


def victims(x, y, seeds, device):
    return train_many(SPEC, x, y, np.ones((len(seeds), len(x))), seeds, TRAIN, device=device,
                      chunk=16 if device == "cpu" else 256).params


def target_view(params, x_t, y_t, adv, device):
    ev = evaluate(params, x_t, y_t, device=device)
    z = torch.stack([evaluate(params, x_t, np.full(len(y_t), c), device=device)["loss"] for c in range(10)], 1)
    hit = (z.argmin(1) == adv).numpy()                                      # lowest CE = the predicted class
    return ev["loss"].numpy(), hit


def harm_table(seeds: list[int], n_victims: int, device: str) -> None:
    print("\n== Harm: victims retrained on clean vs poisoned training sets "
          f"({n_victims} victim seeds each; test accuracy mean [95% t-interval]) ==")
    for seed in seeds:
        parts = split_digits(seed=seed)
        (x, y), (xa, ya), (xs, ys) = parts["train"], parts["attacker"], parts["test"]
        vseeds = list(range(500, 500 + n_victims))
        clean = victims(x, y, vseeds, device)
        clean_acc = evaluate(clean, xs, ys, device=device)["accuracy"].numpy()
        print(f"\nseed {seed}: train {len(x)}, test {len(xs)}; clean test accuracy {fmt(t_interval(clean_acc))}")
        for label, config in attacks():
            start = time.perf_counter()
            crafted = craft(x=x, y=y, spec=SPEC, train=TRAIN, config=config, x_attack=xa, y_attack=ya, seed=seed,
                            device=device)
            poisoned = victims(crafted.x, y, vseeds, device)
            acc = evaluate(poisoned, xs, ys, device=device)["accuracy"].numpy()
            line = (f"  {label:<42} poisons {len(crafted.poison):>3}  test acc {fmt(t_interval(acc))}  "
                    f"(diff {np.mean(acc - clean_acc):+.3f})")
            if crafted.targets is not None:
                xt, yt, adv = xa[crafted.targets], ya[crafted.targets], crafted.adversarial_class
                ce_c, hit_c = target_view(clean, xt, yt, adv, device)
                ce_p, hit_p = target_view(poisoned, xt, yt, adv, device)
                line += (f"  target {yt[0]}->{adv}: success clean {fmt(wilson(int(hit_c.sum()), len(hit_c)))} "
                         f"poisoned {fmt(wilson(int(hit_p.sum()), len(hit_p)))}; target CE geomean "
                         f"{math.exp(np.log(ce_c).mean()):.3g} -> {math.exp(np.log(ce_p).mean()):.3g}")
            line += (f"  [match {crafted.stats['match_before']:.2f}->{crafted.stats['match_after']:.2f}, "
                     f"late16 share {crafted.stats['late_share_last_16']:.2f}, {time.perf_counter() - start:.0f}s]")
            print(line, flush=True)


def audit_table(seeds: list[int], device: str) -> None:
    print("\n== Audit: make-benchmark --kind digits, then the default forensics audit (screens flag their top k) ==")
    header = f"{'seed':>4} {'detector':<24} {'precision':>9} {'recall':>6} {'AUROC':>6} {'trials':>6} {'seconds':>7}"
    rows = []
    for seed in seeds:
        t0 = time.perf_counter()
        arrays = make_digits_benchmark(seed=seed, device=device)
        made = time.perf_counter() - t0
        dataset = validate_arrays(arrays)
        config = AuditConfig(device=device, mode="forensics")           # a targeted attack: find the poisons behind it
        start = time.perf_counter()
        result = run_audit(dataset, config)
        seconds = time.perf_counter() - start
        truth = dataset.is_poison
        det = detection_metrics(flagged=result.verdict.flagged, is_poison=truth)
        rank = ranking_metrics(scores=result.verdict.scores, is_poison=truth)
        rows.append((seed, "audit (group)", det["precision"], det["recall"], rank["auroc"], len(result.outcomes),
                     seconds))
        for name, scores in result.screens.items():
            r = ranking_metrics(scores=scores, is_poison=truth)
            rows.append((seed, f"screen {name}", r["precision_at_k"], r["recall_at_k"], r["auroc"], 1, math.nan))
        conf = result.verdict.confirmation
        print(f"\nseed {seed}: benchmark built in {made:.0f}s; audit {seconds:.0f}s, {len(result.outcomes)} models; "
              f"flagged {det['n_flagged']} ({det['true_positives']} of {det['n_poisons']} poisons); target loss "
              f"with all {conf['generalization']['with_all']['geomean']:.3g} -> without flagged "
              f"{conf['generalization'].get('without_flagged', {}).get('geomean', float('nan')):.3g} "
              f"(p = {conf.get('p_value', float('nan')):.3g})", flush=True)
        _retrain_check(seed, dataset, result.verdict.flagged, device)
    print("\n" + header)
    for seed, name, p, r, auc, trials, sec in rows:
        print(f"{seed:>4} {name:<24} {_num(p):>9} {_num(r):>6} {_num(auc):>6} {trials:>6} "
              f"{'' if math.isnan(sec) else f'{sec:.0f}':>7}")


def _num(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _retrain_check(seed: int, dataset, flagged: list[int], device: str, n: int = 6) -> None:
    """Models from fresh seeds with all data and without the flagged set: the target and the
    trusted split (accuracy), 95% intervals."""
    parts = split_digits(seed=seed)
    xtr, ytr = parts["trusted"]
    keep = np.ones(dataset.n, bool)
    keep[flagged] = False
    seeds = list(range(900, 900 + n))
    for label, mask in (("with all", np.ones(dataset.n, bool)), ("without flagged", keep)):
        params = victims(dataset.x[mask], dataset.y[mask], seeds, device)
        tloss = evaluate(params, dataset.x_val, dataset.y_val, device=device)
        acc = evaluate(params, xtr, ytr, device=device)["accuracy"].numpy()
        right = int(tloss["correct"].all(1).sum())
        print(f"  retrained {label:<16} target CE {fmt(t_interval(tloss['loss'].numpy()))}, target right "
              f"{fmt(wilson(right, n))}, trusted-split accuracy {fmt(t_interval(acc))}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--victims", type=int, default=6)
    parser.add_argument("--part", choices=("both", "harm", "audit"), default="both")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.part in ("both", "harm"):
        harm_table(args.seeds, args.victims, args.device)
    if args.part in ("both", "audit"):
        audit_table(args.seeds, args.device)


if __name__ == "__main__":
    main()
