"""PyTorch peer for benchmarks: the discrete VAE trained by direct optimization through arg max
(Lorberbom, Gane, Jaakkola, Hazan, NeurIPS 2019) the way the authors' published PyTorch code
trains it (GuyLor/Direct-VAE, discrete_vae/DVAE.py). It is the baseline our hand-written kernels
are timed against; it is NOT part of the installed package and nothing in dvae_cupy imports it.

What is reproduced (see /work/shared/DESIGN.md):
- Encoder Linear(784,300)-ReLU-Linear(300,N*K) -> logits (B,N,K); decoder Linear(N*K,300)-ReLU-
  Linear(300,784) -> Bernoulli logits, applied as a dense GEMM to one-hot codes.
- Gumbel-max z_opt = argmax(logits + g), g ~ Gumbel(0,1) drawn with the published formula
  -log(1e-10 - log(U + 1e-10)); M Gumbel samples per point by repeating the batch M times.
- Decoder loss at z_opt (BCE-with-logits summed over pixels, mean over the B*M rows), back-propagated
  through the decoder only, by autograd.
- Candidates the published way: the one-hot rows of all N*K coordinate-wise neighbours of every
  sample (variable n set to k, the others at z_opt) materialised as a dense (B*M*N*K, N*K) tensor,
  the targets repeated N*K-fold (repeat_interleave), the decoder run on all of them without grad,
  BCE summed per candidate -> L (B*M,N,K).
- z_dir = argmax(logits + g - eps*L); the encoder is driven by
  logits.backward(gradient=(onehot(z_opt) - onehot(z_dir)) / eps / (B*M)).
- KL(softmax(logits) || uniform), summed over the N variables, is reported in the loss but not
  back-propagated (the published code's behaviour).
- Two Adam optimisers (encoder, decoder), lr 1e-3; eps = max(eps0*exp(-rate*step), eps_min)
  recomputed every 500 steps (eps0=1, rate=1e-5, eps_min=0.1), updated after the step as in the
  published loop.

Deliberate differences from the published code, none of which changes what is computed per step
beyond a constant scale:
- Scale: the published code sums the decoder loss and the encoder "loss" over the batch; here both
  are means over the batch (B*M rows), as the brief and our package use. Adam is invariant to a
  constant gradient scale (up to its 1e-8 epsilon).
- The candidate tensor is built in one vectorised expression instead of N*K Python-level clones;
  it is the same dense tensor and the same decoder GEMMs, minus Python loop overhead.
- CPU only, float32, no torchvision, no DataLoader: batches are NumPy arrays passed in.

Run:  python benchmarks/torch_peer.py --latent-vars 20 --categories 10 --threads 2
      python benchmarks/torch_peer.py --learn 300      # learning check on Fashion-MNIST
"""

from __future__ import annotations

import argparse
import gzip
import math
import os
import resource
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

FASHION_DIR = "/usr/share/datasets/fashion-mnist"


def _gumbel(shape, generator):
    """Gumbel(0,1) noise exactly as the published code draws it."""
    u = torch.rand(shape, generator=generator, device=generator.device)
    return -torch.log(1e-10 - torch.log(u + 1e-10))


def init_networks(peer, pixels, hidden, encoder_outputs, decoder_inputs, lr, seed, device,
                  schedule):
    """What both peers set up alike, as the published scripts do: the two MLPs (torch's default
    init under manual_seed(seed)) on `device`, an Adam per network, the noise generator (seed
    + 1), and the eps schedule (eps0, anneal_rate, eps_min, eps_every) at step 0."""
    peer.seed = int(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(peer.seed)
        peer.encoder = nn.Sequential(nn.Linear(pixels, hidden), nn.ReLU(),
                                     nn.Linear(hidden, encoder_outputs))
        peer.decoder = nn.Sequential(nn.Linear(decoder_inputs, hidden), nn.ReLU(),
                                     nn.Linear(hidden, pixels))
    peer.device = torch.device(device)
    peer.encoder.to(peer.device)
    peer.decoder.to(peer.device)
    peer.opt_e = torch.optim.Adam(peer.encoder.parameters(), lr=lr)
    peer.opt_d = torch.optim.Adam(peer.decoder.parameters(), lr=lr)
    peer.gen = torch.Generator(device=peer.device).manual_seed(peer.seed + 1)
    peer.eps0, peer.anneal_rate, peer.eps_min, peer.eps_every = schedule
    peer.eps = float(peer.eps0)
    peer.step = 0
    peer._last_x = None


class TorchPeer:
    """Published-style direct-optimisation discrete VAE in PyTorch (CPU, float32)."""

    def __init__(self, n_latent, n_categories, hidden=300, pixels=784, lr=1e-3, seed=0,
                 gumbel_samples=1, threads=None, eps0=1.0, anneal_rate=1e-5, eps_min=0.1,
                 eps_every=500, device="cpu"):
        if threads is not None:
            torch.set_num_threads(int(threads))
        self.N, self.K, self.D, self.M = int(n_latent), int(n_categories), int(pixels), int(gumbel_samples)
        init_networks(self, pixels, hidden, self.N * self.K, self.N * self.K, lr, seed, device,
                      (eps0, anneal_rate, eps_min, eps_every))
        # Constant masks that turn z_opt (B,N,K) into its N*K neighbours (B,N,K,N,K):
        # candidate (n,k) keeps every variable m != n and sets variable n to one-hot k.
        eye_n = torch.eye(self.N)
        self._keep = (1.0 - eye_n).view(1, self.N, 1, self.N, 1).to(self.device)
        self._set = (eye_n.view(self.N, 1, self.N, 1) * torch.eye(self.K).view(1, self.K, 1, self.K)
                     ).view(1, self.N, self.K, self.N, self.K).to(self.device)

    # ----------------------------------------------------------------------------------------
    @staticmethod
    def _kl_uniform(logits):
        """KL(softmax(logits) || uniform) summed over the N variables -> (rows,)."""
        K = logits.shape[-1]
        q = F.softmax(logits, dim=-1)
        return (q * (torch.log(q + 1e-20) + math.log(K))).sum(dim=(-2, -1))

    def _candidates(self, z_opt):
        """Dense one-hot rows of all N*K neighbours of every code: (R,N,K) -> (R*N*K, N*K)."""
        R = z_opt.shape[0]
        cand = z_opt.view(R, 1, 1, self.N, self.K) * self._keep + self._set
        return cand.reshape(R * self.N * self.K, self.N * self.K)

    def train_step(self, x):
        """One published-style direct-optimisation step on a (B,784) float32 0/1 batch.
        Returns the batch's mean (BCE + KL) per sample, as the published loop reports it."""
        self._last_x = x
        x = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)
        B, N, K, M = x.shape[0], self.N, self.K, self.M
        R = B * M
        xr = x.repeat(M, 1) if M > 1 else x                              # (R,D), published order

        logits = self.encoder(x).view(B, N, K)
        logits_r = logits.repeat(M, 1, 1) if M > 1 else logits           # (R,N,K), grad flows back
        with torch.no_grad():
            pert = logits_r.detach() + _gumbel((R, N, K), self.gen)
            z_opt = F.one_hot(pert.argmax(-1), K).to(torch.float32)     # (R,N,K)

        # decoder: loss at z_opt, autograd through the decoder only
        out = self.decoder(z_opt.view(R, N * K))
        bce = F.binary_cross_entropy_with_logits(out, xr, reduction="none").sum(1)  # (R,)
        dec_loss = bce.mean()

        # encoder: direct gradient from the dense candidate evaluation
        eps = self.eps
        with torch.no_grad():
            cand = self._candidates(z_opt)                                # (R*N*K, N*K)
            tgt = xr.repeat_interleave(N * K, dim=0)                      # (R*N*K, D)
            L = F.binary_cross_entropy_with_logits(self.decoder(cand), tgt,
                                                   reduction="none").sum(1).view(R, N, K)
            z_dir = F.one_hot((pert - eps * L).argmax(-1), K).to(torch.float32)
            grad = (z_opt - z_dir) / (eps * R)
            kl = self._kl_uniform(logits.detach())                        # reported, not trained

        self.opt_e.zero_grad(set_to_none=True)
        self.opt_d.zero_grad(set_to_none=True)
        logits_r.backward(gradient=grad)
        dec_loss.backward()
        self.opt_d.step()
        self.opt_e.step()

        # published schedule: recomputed after the step, every eps_every steps
        if self.step % self.eps_every == 0:
            self.eps = max(self.eps0 * math.exp(-self.anneal_rate * self.step), self.eps_min)
        self.step += 1
        return float(dec_loss.detach() + kl.mean())

    @torch.no_grad()
    def test_loss(self, x, batch_size=1000):
        """Mean per-sample BCE at one Gumbel-max sampled code + KL, no grad. The Gumbel noise comes
        from a generator re-seeded on every call, so the figure depends on the parameters only."""
        gen = torch.Generator(device=self.device).manual_seed(self.seed + 12345)
        total, n = 0.0, x.shape[0]
        for i in range(0, n, batch_size):
            xb = torch.as_tensor(np.ascontiguousarray(x[i:i + batch_size], dtype=np.float32)).to(self.device)
            logits = self.encoder(xb).view(-1, self.N, self.K)
            z = F.one_hot((logits + _gumbel(logits.shape, gen)).argmax(-1), self.K).to(torch.float32)
            out = self.decoder(z.view(-1, self.N * self.K))
            bce = F.binary_cross_entropy_with_logits(out, xb, reduction="none").sum(1)
            total += float((bce + self._kl_uniform(logits)).sum())
        return total / n

    def peak_memory_bytes(self, x=None):
        """Peak bytes held by torch's CPU allocator during ONE training step, above what was live
        when the step began (parameters and Adam moments are not counted; the Adam state is
        counted the first time only). Measured with torch.profiler(profile_memory=True): the
        running sum of the step's allocation/free events (torch's CPU allocator
        only; oneDNN/BLAS scratch is not seen), maximised over time. The step is really
        taken (parameters change). x defaults to the last batch given to train_step.
        Process RSS (resource.getrusage maxrss) is not used: it is a lifetime high-water mark, so
        loading the data set or an earlier larger run hides the step's own peak."""
        if x is None:
            x = self._last_x
        if x is None:
            raise ValueError("no batch: pass x or call train_step first")
        if self.device.type == "cuda":  # the caching allocator's own high-water mark
            torch.cuda.synchronize()
            before = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            self.train_step(x)
            return int(torch.cuda.max_memory_allocated() - before)
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            self.train_step(x)
        # Raw allocator events (one per malloc/free, signed nbytes). prof.events() folds the
        # allocations made inside an op into that op, so read the kineto results directly.
        deltas = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                        if e.name() == "[memory]")
        live = peak = 0
        for _, d in deltas:
            live += d
            peak = max(peak, live)
        return int(peak)


# --------------------------------------------------------------------------------------------
def _read_idx_images(path):
    with gzip.open(path, "rb") as f:
        buf = f.read()
    ndim = buf[3]
    dims = np.frombuffer(buf, dtype=">u4", count=ndim, offset=4).astype(int)
    return np.frombuffer(buf, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims[0], -1)


def load_fashion_mnist(directory=FASHION_DIR):
    """(train 60k, test 10k) binarised (pixel >= 128) float32 arrays of shape (n,784)."""
    tr = _read_idx_images(os.path.join(directory, "train-images-idx3-ubyte.gz"))
    te = _read_idx_images(os.path.join(directory, "t10k-images-idx3-ubyte.gz"))
    return (tr >= 128).astype(np.float32), (te >= 128).astype(np.float32)


def _machine():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def _loadavg():
    try:
        return open("/proc/loadavg").read().split()[0]
    except OSError:
        return "?"


def run_command_line(peer, a, model, learn_test_rows=None):
    """What both peers' command lines do once the peer is built from the parsed arguments `a`
    (--data, --batch-size, --seed, --learn, --warmup, --steps, --memory): train on shuffled
    batches of Fashion-MNIST (or random pixels) and print the test loss (--learn; the first
    `learn_test_rows` test images when given), or time train_step. `model` names the model in
    the header line."""
    rng = np.random.default_rng(a.seed)
    use_fashion = a.data == "fashion" or (a.data == "auto" and
                                          os.path.exists(os.path.join(FASHION_DIR, "t10k-images-idx3-ubyte.gz")))
    if a.learn and not use_fashion:
        sys.exit("--learn needs Fashion-MNIST in " + FASHION_DIR)
    if use_fashion:
        train, test = load_fashion_mnist()
        train = train[:50000]
        src = "Fashion-MNIST"
    else:
        train = (rng.random((10 * a.batch_size, 784)) < 0.5).astype(np.float32)
        test, src = None, "random 0/1"

    def batches():
        while True:
            order = rng.permutation(train.shape[0])
            for i in range(0, train.shape[0] - a.batch_size + 1, a.batch_size):
                yield train[order[i:i + a.batch_size]]

    it = batches()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {_machine()}; "
          f"{model} B={a.batch_size} M={a.gumbel_samples}, data {src}")

    if a.learn:
        shown = ""
        if learn_test_rows is not None:
            test, shown = test[:learn_test_rows], f" (first {learn_test_rows} test images)"
        print(f"step     0  test loss {peer.test_loss(test):9.3f}{shown}")
        t0 = time.perf_counter()
        for s in range(1, a.learn + 1):
            tl = peer.train_step(next(it))
            if s % 100 == 0 or s == a.learn:
                print(f"step {s:5d}  train batch loss {tl:9.3f}  test loss {peer.test_loss(test):9.3f}  "
                      f"eps {peer.eps:.4f}  ({time.perf_counter() - t0:.1f} s)")
        return

    for _ in range(a.warmup):
        peer.train_step(next(it))
    times = []
    for _ in range(a.steps):
        xb = next(it)
        t = time.perf_counter()
        peer.train_step(xb)
        times.append((time.perf_counter() - t) * 1e3)
    q = np.percentile(times, [10, 90])
    print(f"median {statistics.median(times):.2f} ms/step over {a.steps} steps after {a.warmup} warm-up "
          f"(p10 {q[0]:.2f}, p90 {q[1]:.2f}); load average now {_loadavg()} "
          f"(other work on these cores inflates every figure)")
    if a.memory:
        print(f"peak torch CPU bytes in one step: {peer.peak_memory_bytes() / 2**20:.1f} MiB; "
              f"process maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


def main(argv=None):
    p = argparse.ArgumentParser(description="Time (or sanity-train) the PyTorch direct-optimisation peer.")
    p.add_argument("--latent-vars", "-N", type=int, default=1)
    p.add_argument("--categories", "-K", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--steps", type=int, default=50, help="timed steps after warm-up")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--gumbel-samples", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", choices=["auto", "fashion", "random"], default="auto",
                   help="Fashion-MNIST from %s (auto: if present) or random 0/1 pixels" % FASHION_DIR)
    p.add_argument("--memory", action="store_true", help="also report one step's peak torch bytes")
    p.add_argument("--learn", type=int, default=0, metavar="STEPS",
                   help="instead of timing: train STEPS steps on the first 50k Fashion-MNIST training "
                        "images and print the t10k test loss before, every 100 steps, and after")
    a = p.parse_args(argv)

    peer = TorchPeer(a.latent_vars, a.categories, seed=a.seed, gumbel_samples=a.gumbel_samples,
                     threads=a.threads)
    run_command_line(peer, a, f"N={a.latent_vars} K={a.categories}")

if __name__ == "__main__":
    main()
