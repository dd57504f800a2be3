"""The CPU ops: the kernels' NumPy/@njit twins, imported by name so that a reader (and a tool)
can follow every `backend.ops.<name>` call to its code. ops_cuda.py lists the same names for the
CUDA launchers, with the same arguments. The neighbours' pruning (prune_rows, select_neighbours,
store_listed_candidate_losses; for the pairwise model neighbour_loss_bounds,
list_flipped_neighbours and the solvers' *_listed variants) is the CPU's only: the host reads
each chunk's size from it (kernels/neighbour_pruning.py, kernels/structured_pruning.py), and the
GPU decodes every neighbour in one chunk. So is gather_active_rows (kernels/active_rows.py): the
host reads how many rows the encoder's backward runs on; the GPU runs it on the whole batch."""
from .kernels.active_rows import gather_active_rows
from .kernels.adam import adam_update
from .kernels.argmax import direct_logit_grad, sample_codes
from .kernels.batch import gather_targets
from .kernels.bce import bce_rows, softplus_row_sums
from .kernels.bias_act import bias_act, relu_backward
from .kernels.candidates import code_losses, neighbour_hidden, store_candidate_losses, store_sampled_losses
from .kernels.neighbour_pruning import prune_rows, select_neighbours, store_listed_candidate_losses
from .kernels.onehot_linear import gather_rows_sum, scatter_rows_add
from .kernels.pairwise_direct_grad import pairwise_direct_grad
from .kernels.pairwise_enumeration import enumeration_argmax, enumeration_argmax_listed
from .kernels.pairwise_mincut import mincut_argmax, mincut_argmax_listed
from .kernels.pairwise_potentials import perturb_unaries
from .kernels.pairwise_potentials import shift_unaries
from .kernels.pairwise_potentials import split_potentials
from .kernels.rng import gumbel_noise, philox_bits
from .kernels.sampled_codes import sampled_code_grads, sampled_code_losses
from .kernels.softmax_kl import softmax_kl
from .kernels.step_end import finish_step
from .kernels.structured_pruning import list_flipped_neighbours, neighbour_loss_bounds, single_flip_codes

__all__ = ["adam_update", "gather_active_rows", "bce_rows", "bias_act", "code_losses", "direct_logit_grad",
           "finish_step", "gather_rows_sum", "gather_targets", "gumbel_noise", "neighbour_hidden", "enumeration_argmax",
           "enumeration_argmax_listed", "list_flipped_neighbours", "mincut_argmax",
           "mincut_argmax_listed", "neighbour_loss_bounds", "single_flip_codes", "pairwise_direct_grad", "perturb_unaries", "shift_unaries",
           "split_potentials",
           "philox_bits", "prune_rows", "relu_backward", "sample_codes", "sampled_code_grads",
           "sampled_code_losses", "scatter_rows_add", "softmax_kl",
           "select_neighbours", "softplus_row_sums", "store_candidate_losses",
           "store_listed_candidate_losses", "store_sampled_losses"]
