import numpy as np
import pytest
import torch

from auditor.crafting import (
    CraftConfig,
    collision_start,
    craft,
    late_share,
    late_weights,
)
from auditor.deep import DeepSpec, DeepTrainConfig

SPEC = DeepSpec(n_classes=3, d_model=4, d_state=4, n_layers=1)
TRAIN = DeepTrainConfig(epochs=4, batch_size=20)


def _data(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.random((n, 12)) * 0.3
    x[np.arange(n), 2 + 3 * y] = 1.0
    return x, y


def test_late_weights_and_share():
    w = late_weights(5, dtype=torch.float64)
    assert w.tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]
    delta = np.zeros((2, 6))
    delta[:, -2:] = 1.0
    delta[0, 0] = 1.0
    assert late_share(delta, last=2) == pytest.approx(4 / 5)


def test_collision_start_moves_late_elements_toward_targets():
    xp = np.zeros((3, 6))
    xt = np.ones((2, 6))
    d = collision_start(xp, xt, eps=0.5, late=2).numpy()
    assert np.array_equal(d[:, :4], np.zeros((3, 4))) and np.array_equal(d[:, 4:], np.full((3, 2), 0.5))


@pytest.mark.parametrize("mode", ["untargeted", "targeted"])
def test_gradient_matching_respects_the_budget_and_improves_the_match(mode):
    x, y = _data(60, 0)
    xa, ya = _data(30, 1)
    config = CraftConfig(mode=mode, fraction=0.1, eps=0.1, late_penalty=1.0, steps=30, targets=1)
    crafted = craft(x=x, y=y, spec=SPEC, train=TRAIN, config=config, x_attack=xa, y_attack=ya, seed=0)
    assert len(crafted.poison) == 6 and crafted.stats["match_after"] < crafted.stats["match_before"]
    delta = crafted.x - x
    assert np.abs(delta).max() <= 0.1 + 1e-6 and crafted.x.min() >= 0 and crafted.x.max() <= 1
    assert np.abs(np.delete(delta, crafted.poison, axis=0)).max() == 0
    assert crafted.stats["late_share_last_8"] > 0.5                 # the penalty moves energy late
    if mode == "targeted":
        assert (y[crafted.poison] == crafted.adversarial_class).all()
        assert ya[crafted.targets][0] != crafted.adversarial_class


def test_gradient_matching_on_channels_keeps_the_shape_and_budget():
    x, y = _data(60, 0)
    xa, ya = _data(30, 1)
    x3 = np.stack([x, x[:, ::-1]], -1)                                                  # (n, L, 2)
    xa3 = np.stack([xa, xa[:, ::-1]], -1)
    spec = DeepSpec(n_classes=3, d_model=4, d_state=4, n_layers=1, d_input=2)
    assert late_weights(4, channels=True).shape == (4, 1)
    config = CraftConfig(fraction=0.1, eps=0.1, steps=20)
    crafted = craft(x=x3, y=y, spec=spec, train=TRAIN, config=config, x_attack=xa3, y_attack=ya, seed=0)
    assert crafted.x.shape == x3.shape and crafted.delta.shape == (6, 12, 2)
    assert crafted.stats["match_after"] < crafted.stats["match_before"]
    assert np.abs(crafted.x - x3).max() <= 0.1 + 1e-6 and crafted.x.min() >= 0 and crafted.x.max() <= 1
    assert crafted.stats["late_share_last_8"] > 0.5
    collided = collision_start(x3[:3], xa3[:1], eps=1.0, late=2).numpy()
    assert np.allclose(collided[:, -2:] + x3[:3, -2:], xa3[0, -2:]) and (collided[:, :-2] == 0).all()


def test_collision_attack_without_steps_and_bad_configs():
    x, y = _data(60, 0)
    xa, ya = _data(30, 1)
    config = CraftConfig(mode="targeted", fraction=0.1, eps=1.0, steps=0, start="collision", late=4, targets=1)
    crafted = craft(x=x, y=y, spec=SPEC, train=TRAIN, config=config, x_attack=xa, y_attack=ya, seed=2)
    target = xa[crafted.targets[0]]
    assert np.allclose(crafted.x[crafted.poison][:, -4:], target[-4:])
    assert np.array_equal(crafted.x[crafted.poison][:, :-4], x[crafted.poison][:, :-4])
    with pytest.raises(ValueError, match="targets"):
        craft(x=x, y=y, spec=SPEC, train=TRAIN, config=CraftConfig(start="collision"), x_attack=xa, y_attack=ya)
    with pytest.raises(ValueError, match="mode"):
        craft(x=x, y=y, spec=SPEC, train=TRAIN, config=CraftConfig(mode="x"), x_attack=xa, y_attack=ya)
