"""Float tolerances of the test suite, each derived from the computation it covers.

One rounding to float32 errs by at most F32_EPS / 2 relative (24 significand bits), one
rounding to bfloat16 by at most BF16_EPS / 2 (8 bits). Results that go through BLAS,
attention or long reductions are not bit-stable across machines or batch shapes: the order
in which a matmul or reduction sums its terms depends on the kernel the CPU dispatches to
(torch's own AVX-512 / AVX2 / default kernels, MKL's and oneDNN's blocking) and on the
shapes (batch size, padded width). Comparisons of such results scale these epsilons by the
size and depth of the computation; exact comparisons stay for results that are bit-identical
by construction, and 1e-9 for float64 arithmetic on identical inputs.
``make test-cpu-kinds`` reruns the float-sensitive tests under this CPU's other kernel sets.
"""

from __future__ import annotations

import math

F32_EPS = 2.0**-23  # 1.19e-7: torch.finfo(torch.float32).eps
BF16_EPS = 2.0**-7  # 7.8e-3: torch.finfo(torch.bfloat16).eps


def encoder_f32_tol(widest_reduction: int, layers: int) -> float:
    """Float32 outputs of a transformer encoder (unit-norm vectors, or cosines of them)
    computed in differently composed batches or under other CPU kernels.

    Rounding errors of a reduction over n terms add like a random walk, ~sqrt(n) eps; the
    layers add theirs in the same way (layer norm keeps activations at scale 1), so the
    outputs differ by ~sqrt(widest_reduction * layers) eps. A cosine of two unit vectors
    is one more 384-term reduction of such values, and BERTScore F1 averages cosines, so
    the same tolerance covers vector elements, cosines and BERTScore.
    """
    return math.sqrt(widest_reduction * layers) * F32_EPS


# all-MiniLM-L6-v2 (6 layers, hidden 384, feed-forward 1536): 1.14e-5. Measured: vector
# elements <= 4.2e-7 (texts of 5-512 tokens, alone vs in batches of 8-32) and BERTScore F1
# <= 2.4e-7 (against the loop and bert_score references), under the AVX-512, AVX2 and
# default kernels.
ENCODER_F32_TOL = encoder_f32_tol(1536, 6)
# The tiny test embedder (dep_lightning/embeddings/tiny.py: 2 layers, hidden 32, feed-forward
# 64) on texts shorter than 64 tokens: 1.35e-6.
TINY_ENCODER_F32_TOL = encoder_f32_tol(64, 2)
