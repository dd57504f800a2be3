"""The CUDA ops: the kernels' launchers, under the names of ops_cpu.py and with the same
arguments (plus an optional `stream`). They take CuPy or Numba device arrays on a GPU, and NumPy
arrays under the Numba CUDA simulator, launch on CuPy's current stream and never synchronise."""
from .kernels.adam import adam_update_cuda as adam_update
from .kernels.argmax import direct_logit_grad_cuda as direct_logit_grad
from .kernels.argmax import sample_codes_cuda as sample_codes
from .kernels.batch import gather_targets_cuda as gather_targets
from .kernels.bce import bce_rows_cuda as bce_rows
from .kernels.bce import softplus_row_sums_cuda as softplus_row_sums
from .kernels.bias_act import bias_act_cuda as bias_act
from .kernels.bias_act import relu_backward_cuda as relu_backward
from .kernels.candidates import code_losses_cuda as code_losses
from .kernels.candidates import neighbour_hidden_cuda as neighbour_hidden
from .kernels.candidates import store_candidate_losses_cuda as store_candidate_losses
from .kernels.candidates import store_sampled_losses_cuda as store_sampled_losses
from .kernels.onehot_linear import gather_rows_sum_cuda as gather_rows_sum
from .kernels.onehot_linear import scatter_rows_add_cuda as scatter_rows_add
from .kernels.pairwise_direct_grad import pairwise_direct_grad_cuda as pairwise_direct_grad
from .kernels.pairwise_enumeration import enumeration_argmax_cuda as enumeration_argmax
from .kernels.pairwise_mincut import mincut_argmax_cuda as mincut_argmax
from .kernels.pairwise_potentials import perturb_unaries_cuda as perturb_unaries
from .kernels.pairwise_potentials import shift_unaries_cuda as shift_unaries
from .kernels.pairwise_potentials import split_potentials_cuda as split_potentials
from .kernels.rng import gumbel_noise_cuda as gumbel_noise
from .kernels.rng import philox_bits_cuda as philox_bits
from .kernels.sampled_codes import sampled_code_grads_cuda as sampled_code_grads
from .kernels.sampled_codes import sampled_code_losses_cuda as sampled_code_losses
from .kernels.softmax_kl import softmax_kl_cuda as softmax_kl
from .kernels.step_end import finish_step_cuda as finish_step

__all__ = ["adam_update", "bce_rows", "bias_act", "code_losses", "direct_logit_grad",
           "finish_step", "gather_rows_sum", "gather_targets", "gumbel_noise", "neighbour_hidden", "enumeration_argmax",
           "mincut_argmax", "pairwise_direct_grad", "perturb_unaries", "shift_unaries",
           "split_potentials",
           "philox_bits", "relu_backward", "sample_codes", "sampled_code_grads",
           "sampled_code_losses", "scatter_rows_add", "softmax_kl",
           "softplus_row_sums", "store_candidate_losses", "store_sampled_losses"]
