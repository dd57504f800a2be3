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
  sample, built and solved with PyMaxflow in a Python loop exactly as published: source
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
- The candidate tensor and the pairwise statistics z_i z_j are built by vectorised expressions
  instead of N*K clones and a combinations() loop per sample (same tensors, less Python
  overhead: fair to the peer). The per-sample PyMaxflow loop is kept: it is the published
  solver, and its cost is what the race measures.
- With M > 1 the published code pairs the pairwise potentials with the first B rows only
  (zip truncates); here each of the M repeated rows gets its data point's potentials.
- CPU only by default, float32, no torchvision/DataLoader: batches are NumPy arrays passed in.
  The signed (CPLEX) variant is not reproduced.

Run:  python benchmarks/torch_peer_structured.py --latent-vars 15 --threads 2
      python benchmarks/torch_peer_structured.py --learn 300      # test loss falling
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import maxflow
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_peer import _gumbel, init_networks, run_command_line  # noqa: E402


def published_maxflow_argmax(a, w):
    """One sample's min-cut as run_structured_maxflow.py builds it: a (N,) unary differences
    phi_i(1) - phi_i(0), w (P,) pairwise potentials >= 0, float64 -> z (N,) in {0, 1}."""
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
    codes = [published_maxflow_argmax(a_r, w_r) for a_r, w_r in zip(a, w)]
    return torch.as_tensor(np.array(codes), device=unary.device)


class TorchPeerStructured:
    """Published-style direct optimisation of the pairwise binary model in PyTorch (float32)."""

    def __init__(self, n_latent=15, hidden=300, pixels=784, lr=1e-3, seed=0, gumbel_samples=1,
                 threads=None, eps0=1.0, anneal_rate=1e-5, eps_min=0.1, eps_every=500,
                 device="cpu"):
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
        with torch.no_grad():
            perturbed = unary_r.detach() + gumbel
            z_opt = argmax_maxflow(perturbed, pairwise_r)                # (R, N)
            onehot_opt = F.one_hot(z_opt, 2).to(torch.float32)           # (R, N, 2)

        out = self.decoder(onehot_opt.view(R, 2 * N))
        dec_loss = F.binary_cross_entropy_with_logits(out, xr, reduction="none").sum(1).mean()

        eps = self.eps
        with torch.no_grad():
            cand = self._candidates(onehot_opt)
            tgt = xr.repeat_interleave(2 * N, dim=0)
            L = F.binary_cross_entropy_with_logits(self.decoder(cand), tgt,
                                                   reduction="none").sum(1).view(R, N, 2)
            z_dir = argmax_maxflow(perturbed - eps * L, pairwise_r)
            sign_unary = onehot_opt - F.one_hot(z_dir, 2).to(torch.float32)
            sign_pair = self._pair_stats(z_opt) - self._pair_stats(z_dir)
            kl = self._kl_uniform(unary.detach())                        # reported, not trained
        surrogate = ((sign_unary * unary_r).sum() + (sign_pair * pairwise_r).sum()) / (eps * R)

        self.opt_e.zero_grad(set_to_none=True)
        self.opt_d.zero_grad(set_to_none=True)
        surrogate.backward()
        dec_loss.backward()
        return float(dec_loss.detach() + kl.mean()), {"z_opt": z_opt, "z_dir": z_dir, "losses": L}

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
            z = argmax_maxflow(unary + _gumbel(unary.shape, gen), pairwise)
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
    p.add_argument("--learn", type=int, default=0, metavar="STEPS",
                   help="instead of timing: train STEPS steps and print the test loss")
    a = p.parse_args(argv)

    peer = TorchPeerStructured(a.latent_vars, seed=a.seed, gumbel_samples=a.gumbel_samples,
                               threads=a.threads)
    # the PyMaxflow loop makes the full 10k test set slow for --learn
    run_command_line(peer, a, f"structured N={a.latent_vars} (K=2, attractive)", learn_test_rows=2000)

if __name__ == "__main__":
    main()
