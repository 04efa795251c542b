"""TensorFlow's stateless normal draws, reimplemented in NumPy.

The paper's networks were initialized by Keras' seeded ``RandomNormal`` initializers
(TensorFlow 2.4), which draw ``tf.random.stateless_normal(shape, seed=[seed, 0])``: a
Philox4x32-10 counter stream (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
SC 2011) turned into float32 normals by the Box-Muller transform, four per counter value.
Matching that stream lets a reproduction start every model exactly where the authors' did,
which matters where the outcome hinges on the initialization (the paper's setting C).

Only the CPU path for float32 is reproduced: key and counter derived from the seed pair as
TensorFlow's ``GenerateKey`` does, element i taken from the (i // 4)-th Philox output.
"""

from __future__ import annotations

import numpy as np

_MASK = np.uint64(0xFFFFFFFF)
_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)          # round multipliers
_W0, _W1 = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)          # key increments (Weyl)


def philox4x32(counter: np.ndarray, key: tuple[int, int]) -> np.ndarray:
    """Ten Philox rounds on each counter: (4, G) uint32 words -> (4, G) uint32 words."""
    c = [np.asarray(word, dtype=np.uint64) for word in counter]
    k0, k1 = np.uint64(key[0]), np.uint64(key[1])
    for _ in range(10):
        p0 = _M0 * c[0]                                          # < 2^64, exact
        p1 = _M1 * c[2]
        c = [(p1 >> np.uint64(32)) ^ c[1] ^ k0, p1 & _MASK,
             (p0 >> np.uint64(32)) ^ c[3] ^ k1, p0 & _MASK]
        k0, k1 = (k0 + _W0) & _MASK, (k1 + _W1) & _MASK
    return np.stack(c).astype(np.uint32)


def _key_counter(seed: tuple[int, int]) -> tuple[tuple[int, int], np.ndarray]:
    """TensorFlow's scrambling of a seed pair into a Philox key and start counter."""
    s0, s1 = (int(s) & 0xFFFFFFFFFFFFFFFF for s in seed)
    words = np.array([[s0 & 0xFFFFFFFF], [s0 >> 32], [s1 & 0xFFFFFFFF], [s1 >> 32]], dtype=np.uint64)
    mix = philox4x32(words, (0x3EC8F720, 0x02461E29))[:, 0]
    return (int(mix[0]), int(mix[1])), np.array([0, 0, mix[2], mix[3]], dtype=np.uint64)


def _uint32_to_float(x: np.ndarray) -> np.ndarray:
    """A float32 in [0, 1) from the low 23 bits: exponent of 1.0 with x's mantissa, minus 1."""
    bits = (x & np.uint32(0x7FFFFF)) | np.uint32(127 << 23)
    return bits.view(np.float32) - np.float32(1.0)


def stateless_normal(size: int, *, seed: tuple[int, int]) -> np.ndarray:
    """The first ``size`` values of ``tf.random.stateless_normal([size], seed)`` (float32).

    The stream is the same for every shape: a tensor of any shape holds these values in
    row-major order, so ``stateless_normal(d * d, ...)`` reshaped is the (d, d) draw.
    """
    key, start = _key_counter(seed)
    groups = -(-size // 4)
    g = np.arange(groups, dtype=np.uint64)
    low = start[0] + g                                            # start[0] = start[1] = 0
    counter = np.stack([low & _MASK, start[1] + (low >> np.uint64(32)),
                        np.full(groups, start[2]), np.full(groups, start[3])])
    bits = philox4x32(counter, key)                               # (4, G)
    u1 = np.maximum(_uint32_to_float(bits[0::2]), np.float32(1e-7))   # pairs (0, 1), (2, 3)
    v = np.float32(2.0 * np.pi) * _uint32_to_float(bits[1::2])
    r = np.sqrt(np.float32(-2.0) * np.log(u1))
    out = np.empty((groups, 4), dtype=np.float32)
    out[:, 0::2] = (r * np.sin(v)).T
    out[:, 1::2] = (r * np.cos(v)).T
    return out.reshape(-1)[:size]
