"""Harm of the UCR benchmarks' attacks: victims retrained on the clean and the poisoned set.

For every benchmark seed and attack, ``make_ucr_benchmark`` (the data set of ``auditor
make-benchmark --kind ucr``) and its clean twin (``--attack none``, the same split); victims
(the audit's deep S4D student, default training) retrained from their own seeds on both:
test-split accuracy (mean and 95% t-interval over victims), the paired accuracy drop
(clean minus poisoned, same victim seed), and for targeted attacks the share of victims
that put the target in the adversarial class (95% Wilson interval).

    python benchmarks/ucr_harm.py                                   # ItalyPowerDemand, seeds 0 1 2
    python benchmarks/ucr_harm.py --dataset GunPoint --seeds 0 --victims 8
    python benchmarks/ucr_harm.py --attacks untargeted --fraction 0.1 --eps 1
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from auditor.deep import DeepSpec, DeepTrainConfig, evaluate, train_many
from auditor.ucr import make_ucr_benchmark
from digits_harm import fmt, t_interval, wilson          # the same intervals as the digits' harm table


def victims(x, y, classes: int, seeds, device):
    return train_many(DeepSpec(n_classes=classes), x, y, np.ones((len(seeds), len(x))), seeds, DeepTrainConfig(),
                      device=device, chunk=16 if device == "cpu" else 256).params


def predicted(params, x, classes: int, device) -> np.ndarray:
    """Each victim's predicted class of every sequence: (M, m)."""
    z = torch.stack([evaluate(params, x, np.full(len(x), c), device=device)["losses"] for c in range(classes)], -1)
    return z.argmin(-1).numpy()                                      # lowest cross-entropy = the prediction


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ItalyPowerDemand")
    parser.add_argument("--attacks", nargs="+", default=["untargeted", "targeted", "collision"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--victims", type=int, default=8)
    parser.add_argument("--fraction", type=float, default=None, help="attack override")
    parser.add_argument("--eps", type=float, default=None, help="attack override")
    parser.add_argument("--steps", type=int, default=None, help="attack override")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(1)
    overrides = {k: v for k, v in (("fraction", args.fraction), ("eps", args.eps), ("steps", args.steps))
                 if v is not None}
    vseeds = list(range(500, 500 + args.victims))
    print(f"== {args.dataset}: {args.victims} victims per set; test accuracy mean [95% t-interval] ==")
    for seed in args.seeds:
        clean = make_ucr_benchmark(args.dataset, attack="none", seed=seed)
        classes = int(max(clean["y"].max(), clean["y_test"].max())) + 1
        xs, ys = clean["x_test"], clean["y_test"]
        clean_acc = evaluate(victims(clean["x"], clean["y"], classes, vseeds, args.device), xs, ys,
                             device=args.device)["accuracy"].numpy()
        print(f"\nseed {seed}: train {len(clean['x'])}, test {len(xs)}; clean {fmt(t_interval(clean_acc))}")
        for attack in args.attacks:
            start = time.perf_counter()
            arrays = make_ucr_benchmark(args.dataset, attack=attack, seed=seed, device=args.device, **overrides)
            made = time.perf_counter() - start
            params = victims(arrays["x"], arrays["y"], classes, vseeds, args.device)
            acc = evaluate(params, xs, ys, device=args.device)["accuracy"].numpy()
            line = (f"  {attack:<10} poisons {int(arrays['is_poison'].sum()):>3}  poisoned {fmt(t_interval(acc))}  "
                    f"drop {fmt(t_interval(clean_acc - acc))}")
            if "x_target" in arrays:
                xt, yt = arrays["x_target"], arrays["y_target"]
                adv = int(arrays["y"][arrays["is_poison"]][0])
                hit_c = (predicted(victims(clean["x"], clean["y"], classes, vseeds, args.device), xt, classes,
                                   args.device)[:, 0] == adv)
                hit_p = predicted(params, xt, classes, args.device)[:, 0] == adv
                line += (f"  target {yt[0]}->{adv}: clean {fmt(wilson(int(hit_c.sum()), len(hit_c)))} "
                         f"poisoned {fmt(wilson(int(hit_p.sum()), len(hit_p)))}")
            print(line + f"  [made in {made:.0f}s]", flush=True)


if __name__ == "__main__":
    main()
