"""Training throughput of the paper's ResNet: meanfield's trainer against a PyTorch peer.

For the network of Taki (2017), section 4 (``--depth`` blocks of ``--kernel-size`` x
``--kernel-size`` convolutions with ``--channels`` channels, ReLU, ``--padding`` circular or
zero), with and without BN, measured in the same run:

* ``meanfield K=1``: one jit-compiled :meth:`meanfield.training.train.Trainer.train_step` (data
  gather from the device-resident uint8 set, normalization, forward, backward, SGD with
  momentum);
* ``meanfield K=9``: the same step for ``--seeds`` networks in one program (``--seed-map``:
  vmap on accelerators by default, an unrolled loop on CPU);
* ``torch``: the same network and step in PyTorch, eager, channels_last memory format,
  ``cudnn.benchmark = True``, SGD with momentum, data already on the device; skipped with a
  message where torch is not installed.

The convolutions are computed as ``--conv`` says: ``auto`` (the default) by the FFT where
:func:`meanfield.training.fftconv.fft_is_faster` picks it (circular padding on a CPU),
``fft`` or ``direct`` forced (the PyTorch peer always convolves directly).

Printed: seconds per step (median over ``--repeats`` timed runs of ``--steps`` steps, after a
warm-up that compiles), training images per second (K·B / step time), and the ratios
meanfield K=1 / torch and meanfield K=9 / meanfield K=1 (in images per second). Float32
everywhere (TF32 off in PyTorch, XLA's default GPU precision for convolutions in JAX is
reported as it is).

    python benchmarks/bench_train.py                          # the paper's sizes (a GPU job)
    python benchmarks/bench_train.py --depth 10 --batch 32 --steps 2   # a CPU-sized run
    python benchmarks/bench_train.py --seeds 2 --steps 2 --repeats 2   # the paper's sizes on a CPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from meanfield import Block  # noqa: E402
from meanfield.io import results  # noqa: E402
from meanfield.training.models import ResNetConfig  # noqa: E402
from meanfield.training.train import TrainConfig, Trainer  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--depth", type=int, default=100, help="residual blocks")
    p.add_argument("--channels", type=int, default=16, help="channels of every block")
    p.add_argument("--kernel-size", type=int, default=8, help="k of the k x k convolutions")
    p.add_argument("--padding", default="circular", choices=("circular", "same"))
    p.add_argument("--batch", type=int, default=128, help="images per step and seed")
    p.add_argument("--seeds", type=int, default=9, help="K of the many-seed row")
    p.add_argument("--steps", type=int, default=20, help="steps per timed run")
    p.add_argument("--repeats", type=int, default=3, help="timed runs (the median is shown)")
    p.add_argument("--norms", nargs="+", default=["none", "bn_post"], help="block kinds")
    p.add_argument("--seed-map", default="auto", choices=("auto", "vmap", "unroll"))
    p.add_argument("--precision", default="float32", choices=("float32", "bf16"))
    p.add_argument(
        "--conv", default="auto", choices=("auto", "fft", "direct"), help="circular convolutions"
    )
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch peer")
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    return p.parse_args(argv)


def _median_time(run, steps: int, repeats: int) -> float:
    run(1)  # warm-up: compilation / cudnn autotuning and first-touch allocations
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(steps)
        times.append((time.perf_counter() - start) / steps)
    return statistics.median(times)


def bench_meanfield(args, norm: str, seeds: int) -> float:
    model = ResNetConfig(
        block=Block("relu", norm),
        depth=args.depth,
        channels=args.channels,
        kernel_size=args.kernel_size,
        padding=args.padding,
    )
    config = TrainConfig(
        model=model,
        seeds=tuple(range(seeds)),
        batch_size=args.batch,
        precision=args.precision,
        seed_map=args.seed_map,
        conv=args.conv,
        check_batch=0,
    )
    n = 4 * args.batch
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8))
    y = jnp.asarray(rng.integers(0, 10, n, dtype=np.int32))
    order = jnp.asarray(np.stack([rng.permutation(n) for _ in range(seeds)]), jnp.int32)
    trainer = Trainer(config, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26))
    box = {"state": trainer.init_state()}
    step_fn = trainer.train_step

    def run(steps):
        state = box["state"]
        for i in range(steps):
            state, loss, _ = step_fn(state, x, y, order, i % 4, i)
        jax.block_until_ready(loss)
        box["state"] = state

    return _median_time(run, args.steps, args.repeats)


def bench_torch(args, norm: str) -> float | None:
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    if dev == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    k, c, depth = args.kernel_size, args.channels, args.depth
    pad = ((k - 1) // 2, k // 2, (k - 1) // 2, k // 2)  # as the JAX model pads
    mode = "circular" if args.padding == "circular" else "constant"

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Conv2d(3, c, k, bias=False)
            self.convs = torch.nn.ModuleList(
                [torch.nn.Conv2d(c, c, k, bias=False) for _ in range(depth)]
            )
            self.bns = torch.nn.ModuleList(
                [torch.nn.BatchNorm2d(c, eps=1e-5, momentum=0.1) for _ in range(depth)]
            )
            self.head = torch.nn.Linear(c, 10)

        def forward(self, x):
            z = self.stem(F.pad(x, pad, mode=mode))
            for conv, bn in zip(self.convs, self.bns, strict=True):
                a = bn(z) if norm == "bn_post" else z
                z = z + torch.relu(conv(F.pad(a, pad, mode=mode)))
            return self.head(z.mean((2, 3)))

    net = Net().to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(args.batch, 3, 32, 32, device=dev).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch,), device=dev)

    def run(steps):
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
        if dev == "cuda":
            torch.cuda.synchronize()

    return _median_time(run, args.steps, args.repeats)


def main(argv=None):
    args = parse_args(argv)
    device = str(jax.devices()[0])
    print(
        f"device {device}; depth {args.depth}, {args.kernel_size}x{args.kernel_size}x"
        f"{args.channels}, {args.padding} padding, batch {args.batch}, {args.steps} steps x "
        f"{args.repeats} runs, {args.precision}, convolutions {args.conv}",
        flush=True,
    )
    rows = []
    header = f"{'block':>8} {'what':>16} {'s/step':>9} {'images/s':>10} {'ratio':>24}"
    print(header)
    for norm in args.norms:
        t1 = bench_meanfield(args, norm, 1)
        tk = bench_meanfield(args, norm, args.seeds)
        tt = None if args.no_torch else bench_torch(args, norm)
        ips1 = args.batch / t1
        ipsk = args.seeds * args.batch / tk
        row = {
            "norm": norm,
            "meanfield_k1_s": t1,
            "meanfield_k1_images_per_s": ips1,
            f"meanfield_k{args.seeds}_s": tk,
            f"meanfield_k{args.seeds}_images_per_s": ipsk,
            "k_over_1": ipsk / ips1,
        }
        print(f"{norm:>8} {'meanfield K=1':>16} {t1:9.4f} {ips1:10.1f}")
        print(
            f"{norm:>8} {f'meanfield K={args.seeds}':>16} {tk:9.4f} {ipsk:10.1f} "
            f"{f'K={args.seeds} / K=1: {ipsk / ips1:.2f}x':>24}"
        )
        if tt is None:
            print(f"{norm:>8} {'torch':>16} {'(not installed or --no-torch)':>36}")
        else:
            ipst = args.batch / tt
            row.update(torch_s=tt, torch_images_per_s=ipst, meanfield_over_torch=ips1 / ipst)
            print(
                f"{norm:>8} {'torch':>16} {tt:9.4f} {ipst:10.1f} "
                f"{f'meanfield / torch: {ips1 / ipst:.2f}x':>24}"
            )
        rows.append(row)
    if args.json is not None:
        payload = {"config": vars(args), "device": device, "rows": rows}
        payload["environment"] = results.environment()
        results.save_json(args.json, json.loads(json.dumps(payload, default=str)))
    return rows


if __name__ == "__main__":
    main()
