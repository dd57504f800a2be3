"""PyTorch peer for benchmarks: the paper's structured (pairwise binary) discrete VAE trained by
direct optimization through arg max, the way the authors' published code trains it
(GuyLor/Direct-VAE, run_structured_maxflow.py). It is the baseline our structured kernels are
timed against; it is NOT part of the installed package and nothing in dvae_cupy imports it.
The unstructured peer is torch_peer.py; this one mirrors its layout and checks.

What is reproduced (see /work/shared/DESIGN.md, "Structured latents"):
- N binary variables, one-hot over K = 2. Encoder Linear(784,300)-ReLU-Linear(300, 2N + P),
  P = N(N-1)/2: unaries phi_i(k) in column 2i + k, then the pairwise pre-activations in the
  order of itertools.combinations(range(N), 2); phi_ij = softplus(pre) >= 0 ("attractive", the
  max-flow version). Decoder Linear(2N,300)-ReLU-Linear(300,784) on the dense one-hot code.
- Gumbel noise on the unaries only, drawn with the published formula; M draws per point by
  repeating the batch M times (row m*B + b, published order).
- z_opt = arg max_z sum_i (phi_i + gamma_i)(z_i) + sum_{i<j} phi_ij z_i z_j by a min-cut per
  sample, built and solved with PyMaxflow in a Python loop, the published graph: source
  capacity -(a_i + sum_j phi_ij / 2) on node i (a_i = phi_i(1) - phi_i(0); negative means a
  sink capacity), phi_ij / 2 each way between i and j, z_i = 1 on the sink side.
- Decoder loss at z_opt (BCE-with-logits summed over pixels, mean over the rows), autograd
  through the decoder only.
- Candidates the published way: the dense (R*N*2, 2N) one-hot rows of every coordinate-wise
  neighbour (variable n set to k, the others at z_opt), targets repeated 2N-fold, decoded
  without grad, BCE per candidate -> L (R, N, 2).
- z_dir = the PyMaxflow min-cut of (phi_i + gamma_i - eps L_i) with the same pairwise terms.
- Encoder driven by the published surrogate: the sum of (onehot(z_opt) - onehot(z_dir)) * phi_i
  plus (z_i z_j|z_opt - z_i z_j|z_dir) * phi_ij, over eps, backward by autograd (so the softplus
  derivative is autograd's, not ours).
- KL(softmax(phi_i) || uniform) summed over the variables is reported, not back-propagated.
- Two Adam optimisers, lr 1e-3; eps = max(exp(-1e-5 step), 0.1) every 500 steps, as published.

Deliberate differences from the published code, none of which changes what is computed per step
beyond a constant scale:
- Scale: both losses are means over the R = B*M rows instead of sums (Adam ignores the scale).
- Two modes of the per-sample work, the same codes and gradients (checked equal, bit for bit,
  for the same noise, by tests/test_torch_peer_structured.py):
  vectorised (the default, published_loops=False): fair to the peer. Each row's graph capacities
    come from np.add.at, the candidate rows from one broadcast expression, the pair statistics
    z_i z_j from index tensors, and the perturbed unaries stay one tensor (no grad). The
    per-sample PyMaxflow loop is kept: it is the published solver, and its cost is what the
    race measures.
  as published (published_loops=True): the published code's per-sample Python work, as it does
    it. The batch is zipped into a list of per-row (unaries, pairwise) views, with grad; per row a
    torch subtraction phi(1) - phi(0), two .detach().cpu().numpy().astype(float) copies, and the
    graph built from the negated arrays with a pair -> index dict (both key orders) made afresh,
    each node's terminal capacity a generator sum over its pairs, one add_edge per pair,
    get_grid_segments, then torch.tensor of the list of codes; the candidates by N*K clones
    (scatter_ to clear variable n, then set [:, n, k]) and torch.cat of them and of the targets;
    the per-row unaries torch.cat back (soft_copy) and shifted by eps L for z_dir and the
    surrogate, the per-row pairwise rows unsqueezed and torch.cat; the pair statistics by
    combinations() over .tolist() rows, one torch.tensor per row. Liberties: for-range loops where
    the published code counts with while, and its unused locals (the node index list, the flow
    value) are not formed. Its surrogate's value differs by the constant sum of sign * (gamma -
    eps L), its gradient not.
  In both modes the candidates are decoded under no_grad (the published code records and drops
  an autograd graph there).
- With M > 1 the published code pairs the pairwise potentials with the first B rows only
  (zip truncates); here each of the M repeated rows gets its data point's potentials.
- CPU only by default, float32, no torchvision/DataLoader: batches are NumPy arrays passed in.
  The signed (CPLEX) variant is not reproduced.

Run:  python benchmarks/torch_peer_structured.py --latent-vars 15 --threads 2 [--published-loops]
      python benchmarks/torch_peer_structured.py --learn 300      # test loss falling
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings
from itertools import combinations
from typing import NamedTuple

import maxflow
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_peer import _gumbel, init_networks, run_command_line  # noqa: E402


def mincut_argmax(a, w):
    """One sample's min-cut, capacities vectorised: a (N,) unary differences phi_i(1) - phi_i(0),
    w (P,) pairwise potentials >= 0, float64 -> z (N,) in {0, 1}. Source capacity
    -(a_i + sum_j w_ij / 2) on node i (negative: a sink capacity), w_ij / 2 each way."""
    n = len(a)
    graph = maxflow.Graph[float]()
    nodes = graph.add_nodes(n)
    pairs = np.triu_indices(n, k=1)
    half_sums = np.zeros(n)
    np.add.at(half_sums, pairs[0], 0.5 * w)
    np.add.at(half_sums, pairs[1], 0.5 * w)
    for i in range(n):
        graph.add_tedge(nodes[i], -a[i] - half_sums[i], 0.0)
    for p in range(len(w)):
        graph.add_edge(nodes[pairs[0][p]], nodes[pairs[1][p]], 0.5 * w[p], 0.5 * w[p])
    graph.maxflow()
    return np.array([graph.get_segment(nodes[i]) for i in range(n)], dtype=np.int64)


def argmax_maxflow(unary, pairwise):
    """Per-sample PyMaxflow min-cut in a Python loop (the published solver): unary (R, N, 2),
    pairwise (R, P) tensors -> codes (R, N) long."""
    a = (unary[..., 1] - unary[..., 0]).detach().cpu().numpy().astype(float)
    w = pairwise.detach().cpu().numpy().astype(float)
    codes = [mincut_argmax(a_r, w_r) for a_r, w_r in zip(a, w)]
    return torch.as_tensor(np.array(codes), device=unary.device)


# --------------------------------------------------------------------------------------------
# The published code's per-sample Python work (published_loops=True), done the way it does it

def pair_index(n):
    """{(i, j): p} for the pairs of combinations(range(n), 2) and the same p under (j, i)."""
    index = {pair: p for p, pair in enumerate(combinations(range(n), 2))}
    for i, j in list(index):
        index[j, i] = index[i, j]
    return index


def mincut_argmax_as_published(a, w):
    """One sample's min-cut built as run_structured_maxflow.py builds it, the same graph as
    mincut_argmax: both arrays negated, a pair dict made for this row, each node's terminal
    capacity a generator sum over its pairs -> z (N,) float64 in {0., 1.}."""
    a, w = -a, -w
    n = len(a)
    graph = maxflow.Graph[float]()
    nodes = graph.add_nodes(n)
    index = pair_index(n)
    for i in range(n):
        capacity = sum(0.5 * w[index[i, j]] for j in range(n) if j != i) + a[i]
        graph.add_tedge(i, capacity, 0)
        for j in range(i + 1, n):
            c = w[index[i, j]]
            graph.add_edge(i, j, -0.5 * c, -0.5 * c)
    graph.maxflow()
    return 1.0 * graph.get_grid_segments(nodes)


def argmax_maxflow_as_published(rows, device):
    """The published batch arg max: rows, (unary (N, 2), pairwise (P,)) per-row tensors ->
    codes (R, N) long; per row a torch subtraction and two NumPy copies."""
    codes = []
    for unary, pairwise in rows:
        a = unary[:, 1] - unary[:, 0]
        codes.append(mincut_argmax_as_published(
            a.detach().cpu().numpy().astype(float),
            pairwise.reshape(-1).detach().cpu().numpy().astype(float)))
    with warnings.catch_warnings():  # torch's "list of numpy.ndarrays is extremely slow": it is
        warnings.filterwarnings("ignore", message="Creating a tensor from a list of numpy")
        return torch.tensor(codes, dtype=torch.long).to(device)


def candidates_as_published(onehot, targets):
    """The published neighbour rows and their targets: onehot (R, N, K), targets (R, D) ->
    ((R*N*K, N*K) rows, (R*N*K, D) targets), one clone per variable and per value."""
    R, N, K = onehot.shape
    rows, target_rows = [], []
    for n in range(N):
        cleared = onehot.clone()
        cleared.scatter_(1, n * torch.ones(R, 1, K, dtype=torch.long, device=onehot.device), 0)
        for k in range(K):
            row = cleared.clone()
            row[:, n, k] = 1
            rows.append(row)
            target_rows.append(targets)
    return (torch.cat(rows, 1).view(-1, N * K),
            torch.cat(target_rows, 1).view(-1, targets.shape[-1]))


def pair_signs_as_published(z_opt, z_dir):
    """z_i z_j|z_opt - z_i z_j|z_dir per row (R, P) float32, the published way: combinations()
    over each row's Python list, one tensor per row and code, torch.cat."""
    signs = []
    for opt, direct in zip(z_opt.tolist(), z_dir.tolist()):
        pairs_opt = torch.tensor([l * r for l, r in combinations(opt, 2)])
        pairs_dir = torch.tensor([l * r for l, r in combinations(direct, 2)])
        signs.append((pairs_opt - pairs_dir).unsqueeze(0))
    return torch.cat(signs).type(torch.float).to(z_opt.device)


# --------------------------------------------------------------------------------------------
class DirectTerms(NamedTuple):
    """One step's codes and candidate losses, and the surrogate's factors: the encoder is
    driven by sum(sign_unary * unary) + sum(sign_pair * pairwise), over eps R."""
    z_opt: torch.Tensor       # (R, N) long
    z_dir: torch.Tensor       # (R, N) long
    losses: torch.Tensor      # (R, N, 2) candidate BCE
    onehot_opt: torch.Tensor  # (R, N, 2) float32, the decoder's input
    sign_unary: torch.Tensor  # (R, N, 2) onehot(z_opt) - onehot(z_dir)
    unary: torch.Tensor       # (R, N, 2) with grad to the encoder's unaries
    sign_pair: torch.Tensor   # (R, P) z_i z_j|z_opt - z_i z_j|z_dir
    pairwise: torch.Tensor    # (R, P) with grad to the encoder's pairwise potentials


class TorchPeerStructured:
    """Published-style direct optimisation of the pairwise binary model in PyTorch (float32).
    published_loops: do the per-sample work with the published code's Python loops (the module
    docstring's "as published" mode) instead of vectorised; the same codes and gradients."""

    def __init__(self, n_latent=15, hidden=300, pixels=784, lr=1e-3, seed=0, gumbel_samples=1,
                 threads=None, eps0=1.0, anneal_rate=1e-5, eps_min=0.1, eps_every=500,
                 device="cpu", published_loops=False):
        self.published_loops = bool(published_loops)
        if threads is not None:
            torch.set_num_threads(int(threads))
        self.N, self.K, self.D, self.M = int(n_latent), 2, int(pixels), int(gumbel_samples)
        if self.N < 2:
            raise ValueError(f"n_latent must be >= 2 for a pairwise model, got {n_latent!r}")
        self.P = self.N * (self.N - 1) // 2
        init_networks(self, pixels, hidden, 2 * self.N + self.P, 2 * self.N, lr, seed, device,
                      (eps0, anneal_rate, eps_min, eps_every))
        first, second = np.triu_indices(self.N, k=1)  # combinations(range(N), 2) order
        self._first = torch.as_tensor(first, device=self.device)
        self._second = torch.as_tensor(second, device=self.device)
        eye_n = torch.eye(self.N)
        self._keep = (1.0 - eye_n).view(1, self.N, 1, self.N, 1).to(self.device)
        self._set = (eye_n.view(self.N, 1, self.N, 1) * torch.eye(2).view(1, 2, 1, 2)
                     ).view(1, self.N, 2, self.N, 2).to(self.device)

    # ----------------------------------------------------------------------------------------
    @staticmethod
    def _kl_uniform(unary):
        """KL(softmax(unary) || uniform) summed over the N variables -> (rows,)."""
        q = F.softmax(unary, dim=-1)
        return (q * (torch.log(q + 1e-20) + math.log(2))).sum(dim=(-2, -1))

    def _potentials(self, x):
        out = self.encoder(x)
        unary = out[:, :2 * self.N].reshape(-1, self.N, 2)
        return unary, F.softplus(out[:, 2 * self.N:])

    def _candidates(self, z_opt):
        """Dense one-hot rows of all 2N neighbours of every code: (R,N,2) -> (R*N*2, 2N)."""
        R = z_opt.shape[0]
        cand = z_opt.view(R, 1, 1, self.N, 2) * self._keep + self._set
        return cand.reshape(R * self.N * 2, 2 * self.N)

    def _pair_stats(self, codes):
        return (codes[:, self._first] * codes[:, self._second]).to(torch.float32)

    def gumbel(self, rows):
        """Gumbel noise (rows, N, 2) of the published formula from the peer's generator."""
        return _gumbel((rows, self.N, 2), self.gen)

    def _argmax(self, unary, pairwise):
        """Structured arg max of (R, N, 2) unaries and (R, P) pairwise potentials in this mode."""
        if self.published_loops:
            return argmax_maxflow_as_published(list(zip(unary, pairwise)), self.device)
        return argmax_maxflow(unary, pairwise)

    @torch.no_grad()
    def _candidate_losses(self, rows, targets):
        """BCE summed over pixels of every decoded neighbour row -> (R, N, 2)."""
        out = self.decoder(rows)
        bce = F.binary_cross_entropy_with_logits(out, targets, reduction="none").sum(1)
        return bce.view(-1, self.N, 2)

    @torch.no_grad()
    def _direct_vectorised(self, unary_r, pairwise_r, gumbel, xr, eps):
        perturbed = unary_r.detach() + gumbel
        z_opt = argmax_maxflow(perturbed, pairwise_r)
        onehot_opt = F.one_hot(z_opt, 2).to(torch.float32)
        L = self._candidate_losses(self._candidates(onehot_opt),
                                   xr.repeat_interleave(2 * self.N, dim=0))
        z_dir = argmax_maxflow(perturbed - eps * L, pairwise_r)
        sign_unary = onehot_opt - F.one_hot(z_dir, 2).to(torch.float32)
        sign_pair = self._pair_stats(z_opt) - self._pair_stats(z_dir)
        return DirectTerms(z_opt, z_dir, L, onehot_opt, sign_unary, unary_r, sign_pair, pairwise_r)

    def _direct_as_published(self, unary_r, pairwise_r, gumbel, xr, eps):
        R = unary_r.shape[0]
        # the published list of per-row (unaries, pairwise) views, with grad
        rows = list(zip((unary_r + gumbel).view(R, self.N, 2), pairwise_r))
        z_opt = argmax_maxflow_as_published(rows, self.device)
        onehot_opt = F.one_hot(z_opt, 2).to(torch.float32)
        L = self._candidate_losses(*candidates_as_published(onehot_opt, xr))
        unary_rows, pair_rows = zip(*rows)
        shifted = torch.cat(unary_rows).view(R, self.N, 2) - eps * L  # soft_copy - eps L
        z_dir = argmax_maxflow_as_published(zip(shifted, pair_rows), self.device)
        with torch.no_grad():
            sign_unary = onehot_opt - F.one_hot(z_dir, 2).to(torch.float32)
            sign_pair = pair_signs_as_published(z_opt, z_dir)
        pairwise = torch.cat([row.unsqueeze(0) for row in pair_rows])
        return DirectTerms(z_opt, z_dir, L, onehot_opt, sign_unary, shifted, sign_pair, pairwise)

    def gradients(self, x, gumbel=None):
        """Loss (mean BCE + KL per sample) and the .grad of every parameter for one published
        step on a (B,784) 0/1 batch; `gumbel` (B*M, N, 2), published row order m*B + b, or
        drawn. Returns (loss, {"z_opt", "z_dir", "losses"})."""
        x = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)
        B, N, M = x.shape[0], self.N, self.M
        R = B * M
        xr = x.repeat(M, 1) if M > 1 else x
        unary, pairwise = self._potentials(x)
        unary_r = unary.repeat(M, 1, 1) if M > 1 else unary             # grad flows back
        pairwise_r = pairwise.repeat(M, 1) if M > 1 else pairwise
        if gumbel is None:
            gumbel = self.gumbel(R)
        gumbel = torch.as_tensor(gumbel, dtype=torch.float32, device=self.device)
        eps = self.eps
        direct = self._direct_as_published if self.published_loops else self._direct_vectorised
        terms = direct(unary_r, pairwise_r, gumbel, xr, eps)

        out = self.decoder(terms.onehot_opt.view(R, 2 * N))
        dec_loss = F.binary_cross_entropy_with_logits(out, xr, reduction="none").sum(1).mean()
        with torch.no_grad():
            kl = self._kl_uniform(unary.detach())                        # reported, not trained
        surrogate = ((terms.sign_unary * terms.unary).sum()
                     + (terms.sign_pair * terms.pairwise).sum()) / (eps * R)

        self.opt_e.zero_grad(set_to_none=True)
        self.opt_d.zero_grad(set_to_none=True)
        surrogate.backward()
        dec_loss.backward()
        return float(dec_loss.detach() + kl.mean()), {"z_opt": terms.z_opt, "z_dir": terms.z_dir,
                                                      "losses": terms.losses}

    def train_step(self, x):
        """One published-style step; returns the batch's mean (BCE + KL) per sample."""
        self._last_x = x
        loss, _ = self.gradients(x)
        self.opt_d.step()
        self.opt_e.step()
        if self.step % self.eps_every == 0:  # published schedule, after the step
            self.eps = max(self.eps0 * math.exp(-self.anneal_rate * self.step), self.eps_min)
        self.step += 1
        return loss

    @torch.no_grad()
    def test_loss(self, x, batch_size=1000):
        """Mean per-sample BCE at the structured arg max of one Gumbel draw + unary KL (the
        published test figure; not the structured ELBO). Noise re-seeded on every call."""
        gen = torch.Generator(device=self.device).manual_seed(self.seed + 12345)
        total = 0.0
        for i in range(0, x.shape[0], batch_size):
            xb = torch.as_tensor(np.ascontiguousarray(x[i:i + batch_size], dtype=np.float32)).to(self.device)
            unary, pairwise = self._potentials(xb)
            z = self._argmax(unary + _gumbel(unary.shape, gen), pairwise)
            out = self.decoder(F.one_hot(z, 2).to(torch.float32).view(-1, 2 * self.N))
            bce = F.binary_cross_entropy_with_logits(out, xb, reduction="none").sum(1)
            total += float((bce + self._kl_uniform(unary)).sum())
        return total / x.shape[0]

    def peak_memory_bytes(self, x=None):
        """Peak bytes of torch's CPU allocator during ONE training step (as torch_peer.py)."""
        if x is None:
            x = self._last_x
        if x is None:
            raise ValueError("no batch: pass x or call train_step first")
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            self.train_step(x)
        deltas = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                        if e.name() == "[memory]")
        live = peak = 0
        for _, d in deltas:
            live += d
            peak = max(peak, live)
        return int(peak)

    def numpy_params(self):
        """The 8 arrays in dvae_cupy.reference's layout (float64, weights (fan_in, fan_out))."""
        enc1, enc2 = self.encoder[0], self.encoder[2]
        dec1, dec2 = self.decoder[0], self.decoder[2]
        arrays = {"enc_w1": enc1.weight.T, "enc_b1": enc1.bias, "enc_w2": enc2.weight.T,
                  "enc_b2": enc2.bias, "dec_w1": dec1.weight.T, "dec_b1": dec1.bias,
                  "dec_w2": dec2.weight.T, "dec_b2": dec2.bias}
        return {name: a.detach().cpu().numpy().astype(np.float64) for name, a in arrays.items()}

    def numpy_grads(self):
        """The .grad of every parameter in the same layout as numpy_params."""
        enc1, enc2 = self.encoder[0], self.encoder[2]
        dec1, dec2 = self.decoder[0], self.decoder[2]
        arrays = {"enc_w1": enc1.weight.grad.T, "enc_b1": enc1.bias.grad,
                  "enc_w2": enc2.weight.grad.T, "enc_b2": enc2.bias.grad,
                  "dec_w1": dec1.weight.grad.T, "dec_b1": dec1.bias.grad,
                  "dec_w2": dec2.weight.grad.T, "dec_b2": dec2.bias.grad}
        return {name: a.detach().cpu().numpy().astype(np.float64) for name, a in arrays.items()}


# --------------------------------------------------------------------------------------------
def main(argv=None):
    p = argparse.ArgumentParser(description="Time (or sanity-train) the structured PyTorch peer.")
    p.add_argument("--latent-vars", "-N", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--steps", type=int, default=30, help="timed steps after warm-up")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--gumbel-samples", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", choices=["auto", "fashion", "random"], default="auto")
    p.add_argument("--memory", action="store_true", help="also report one step's peak torch bytes")
    p.add_argument("--published-loops", action="store_true",
                   help="the published code's per-sample Python loops instead of vectorised ones")
    p.add_argument("--learn", type=int, default=0, metavar="STEPS",
                   help="instead of timing: train STEPS steps and print the test loss")
    a = p.parse_args(argv)

    peer = TorchPeerStructured(a.latent_vars, seed=a.seed, gumbel_samples=a.gumbel_samples,
                               threads=a.threads, published_loops=a.published_loops)
    mode = "as published" if a.published_loops else "vectorised"
    # the PyMaxflow loop makes the full 10k test set slow for --learn
    run_command_line(peer, a, f"structured N={a.latent_vars} (K=2, attractive, {mode})",
                     learn_test_rows=2000)

if __name__ == "__main__":
    main()
