"""Command-line entry points: dvae-train (train a discrete VAE) and dvae-check (kernels vs reference)."""
import argparse
import sys

from .train import TrainConfig, Trainer

DEFAULTS = TrainConfig()


def _train_parser():
    p = argparse.ArgumentParser(
        prog="dvae-train",
        description="Train a discrete VAE with direct optimization through arg max "
                    "(Lorberbom et al., NeurIPS 2019). Defaults are the paper's.")
    data = p.add_argument_group("data")
    data.add_argument("--dataset", default=DEFAULTS.dataset,
                      help="fashion-mnist (embedded, the default), fashion-mnist-idx, mnist, omniglot, "
                           "or a path to an .h5 file in our layout or a folder of IDX files")
    data.add_argument("--data-root", default=None,
                      help="folder of the IDX files (mnist, fashion-mnist-idx) or chardata.mat (omniglot)")
    data.add_argument("--binarization", choices=("fixed", "dynamic"), default=DEFAULTS.binarization)
    data.add_argument("--train-subset", type=int, default=None, help="train on the first n images only")
    data.add_argument("--eval-subset", type=int, default=None, help="evaluate on the first n images only")
    model = p.add_argument_group("model")
    model.add_argument("--latent-vars", "-N", dest="n_latent", type=int, default=DEFAULTS.n_latent)
    model.add_argument("--categories", "-K", dest="n_categories", type=int, default=DEFAULTS.n_categories)
    model.add_argument("--hidden", type=int, default=DEFAULTS.hidden)
    est = p.add_argument_group("estimator")
    est.add_argument("--estimator", choices=("direct", "gumbel-softmax", "exact"), default=DEFAULTS.estimator)
    est.add_argument("--gumbel-samples", "-M", type=int, default=DEFAULTS.gumbel_samples,
                     help="Gumbel samples per data point")
    est.add_argument("--two-sided", action="store_true", help="direct: central difference in eps")
    est.add_argument("--kl-backprop", action="store_true",
                     help="direct: also back-propagate the KL's exact gradient (off by default, as in "
                          "the published code: at the paper's eps the direct estimate of the BCE "
                          "gradient is shrunk, the KL's is not, and the codes collapse; see BENCHMARKS.md)")
    est.add_argument("--straight-through", action="store_true",
                     help="gumbel-softmax: decode the hard code, back-propagate the relaxed one")
    est.add_argument("--eps0", type=float, default=DEFAULTS.eps0)
    est.add_argument("--eps-anneal-rate", type=float, default=DEFAULTS.eps_anneal_rate)
    est.add_argument("--eps-min", type=float, default=DEFAULTS.eps_min)
    est.add_argument("--tau0", type=float, default=DEFAULTS.tau0, help="gumbel-softmax temperature")
    est.add_argument("--tau-anneal-rate", type=float, default=DEFAULTS.tau_anneal_rate)
    est.add_argument("--tau-min", type=float, default=DEFAULTS.tau_min)
    est.add_argument("--anneal-every", type=int, default=DEFAULTS.anneal_every,
                     help="steps between updates of eps and tau")
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=int, default=DEFAULTS.epochs)
    opt.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size)
    opt.add_argument("--lr", type=float, default=DEFAULTS.lr)
    opt.add_argument("--seed", type=int, default=DEFAULTS.seed)
    run = p.add_argument_group("run")
    run.add_argument("--backend", choices=("auto", "cpu", "gpu"), default=DEFAULTS.backend)
    run.add_argument("--out", default=DEFAULTS.out, help="output folder (checkpoints, metrics, pictures)")
    run.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    run.add_argument("--cuda-graph", action="store_true",
                     help="gpu: capture one training step as a CUDA graph and replay it "
                          "(direct and exact estimators; falls back to plain launches if capture fails)")
    run.add_argument("--eval-batch-size", type=int, default=DEFAULTS.eval_batch_size)
    run.add_argument("--nll-samples", type=int, default=DEFAULTS.nll_samples,
                     help="importance samples for the final test NLL bound when N > 1")
    run.add_argument("--no-progress", dest="progress", action="store_false")
    return p


def train_main(argv=None):
    args = vars(_train_parser().parse_args(argv))
    resume = args.pop("resume")
    try:
        config = TrainConfig.from_dict(args)
        trainer = Trainer(config)
        if resume:
            trainer.resume()
        print(f"training on {trainer.backend.name}: N={config.n_latent} K={config.n_categories} "
              f"estimator={config.estimator}, {len(trainer.train_images)} images, "
              f"{trainer.steps_per_epoch} steps per epoch, output in {config.out}", flush=True)
        trainer.run()
        if config.n_latent > 1 and trainer.metrics:
            nll = trainer.evaluate_nll()
            print(f"test NLL bound ({config.nll_samples} importance samples): {nll:.2f}")
    except KeyboardInterrupt:
        return 130
    except (ValueError, FileNotFoundError, RuntimeError, FloatingPointError) as error:
        print(f"dvae-train: error: {error}", file=sys.stderr)
        return 2
    return 0


def check_main(argv=None):
    from .check import check_main as run_checks

    return run_checks(argv)


if __name__ == "__main__":
    sys.exit(train_main())
