"""Hand-written kernels, installed as dvae_cupy.kernels. The rule: one module per op or per small
family of ops that share scalar bodies or are one layer's forward and backward; in each module
every op's CPU twin `op(...)` and CUDA launcher `op_cuda(..., stream=None)` sit side by side with
the same arguments (kernels/_cuda.py's docstring is the rulebook). Per-step scalars (counters,
Adam's step, eps) are always 1-element arrays read inside the kernels.

  rng            philox_bits, gumbel_noise            (Philox4x32-10 and its Gumbel noise)
  argmax         sample_codes, direct_logit_grad      (Gumbel-max and the perturbed arg max)
  adam           adam_update
  bias_act       bias_act, relu_backward              (a dense layer's bias + ReLU, both ways)
  onehot_linear  gather_rows_sum, scatter_rows_add    (the decoder's first layer, both ways)
  bce            bce_rows, softplus_row_sums          (the Bernoulli decoder loss)
  softmax_kl     softmax_kl                           (KL(q || uniform) and its gradient)
  candidates     code_losses, neighbour_hidden, store_candidate_losses, store_sampled_losses
                                                      (the direct estimator's candidate losses)
  sampled_codes  sampled_code_losses, sampled_code_grads  (N = 1: the decoder at the sampled
                                                      codes, from the K codes' decoder)
  batch          gather_targets                       (the training batch and its targets)
  step_end       finish_step                          (loss sum and counters of a step)
  active_rows    gather_active_rows                   (the CPU's: the encoder backward's rows that
                                                      carry gradient, gathered)
Helpers, no ops: _cuda (launch plumbing), _checks (argument checks), _reduce (block sum),
fastmath_f32 (vectorisable float32 exp / log1p bodies), _compile (the on-disk kernel cache),
_numba_init (Numba's start-up and the cached kernels' loads, in a thread).

Every module is imported here, inside _compile.caching_into(CACHE_FOLDER): the CPU kernels (cache=CACHE)
then cache their machine code in a folder keyed by a digest of all these sources, so a new
process skips Numba's compilation and an edit to any file compiles afresh (and a new folder
clears out the stale ones: _compile.open_cache_dir).
"""
import importlib
import pkgutil

from ._compile import CACHE_FOLDER, caching_into

with caching_into(CACHE_FOLDER):
    for _module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{_module.name}")
