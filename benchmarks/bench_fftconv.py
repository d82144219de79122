"""Circular convolution: the FFT path of meanfield.training.fftconv against nn.Conv's direct one.

One layer, forward and backward (the gradient of a scalar loss with respect to the input and
the kernel), jit-compiled, for each kernel size k, image side H (square images), channel
count C (C -> C) and ``--batch``. Printed: milliseconds per call of each path (the best of
``--repeats`` runs of ``--calls`` calls after a warm-up that compiles), the speed-up
direct / FFT, whether :func:`meanfield.training.fftconv.fft_is_faster` picks the FFT there,
and the largest difference between the two paths' outputs relative to the output's scale.
The rule of ``method="auto"`` is read from these rows (docs/performance.md).

``--stages`` instead times the FFT path's forward pass stage by stage for the first kernel
size, side and channel count (each stage its own compiled program, best of 20 calls), next to
the whole layer forward and forward-and-backward: where the time goes.

    python benchmarks/bench_fftconv.py                       # the grid on the default device
    python benchmarks/bench_fftconv.py --kernels 8 --sides 32 --channels 16 --batch 128
    python benchmarks/bench_fftconv.py --stages --kernels 8 --sides 32 --channels 16 --batch 128
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from meanfield.io import results  # noqa: E402
from meanfield.training import fftconv  # noqa: E402
from meanfield.training.fftconv import CircularConv, fft_is_faster  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kernels", type=int, nargs="+", default=[1, 3, 5, 8])
    p.add_argument("--sides", type=int, nargs="+", default=[8, 16, 32])
    p.add_argument("--channels", type=int, nargs="+", default=[16, 64])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--calls", type=int, default=5, help="calls per timed run")
    p.add_argument("--repeats", type=int, default=3, help="timed runs (the best is shown)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    p.add_argument("--stages", action="store_true", help="instead: the forward stage by stage")
    return p.parse_args(argv)


def _best(fn, *args, calls: int = 20):
    fn = jax.jit(fn)
    out = jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(calls):
        start = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best, out


def stages(k: int, side: int, channels: int, batch: int) -> list[tuple[str, float]]:
    """Milliseconds of each stage of :func:`fftconv.circular_conv_fft`'s forward pass, the
    whole forward, and forward and backward, of one layer (C -> C), and of nn.Conv's."""
    x = jax.random.normal(jax.random.key(0), (batch, side, side, channels))
    kernel = jax.random.normal(jax.random.key(1), (k, k, channels, channels)) / (k * channels)
    h, w, c = side, side, channels
    rows = []

    def stage(name, fn, *args):
        t, out = _best(fn, *args)
        rows.append((name, 1e3 * t))
        return out

    xt = stage("NHWC -> NCHW", lambda x: x.transpose(0, 3, 1, 2), x)
    spec = stage("rfft2", jnp.fft.rfft2, xt)
    stacked = stage(
        "to (H, W/2+1, B, 2C), real | imaginary",
        lambda s: jnp.concatenate([s.transpose(2, 3, 0, 1).real, s.transpose(2, 3, 0, 1).imag], -1),
        spec,
    )
    m = stage("kernel spectrum", lambda k: fftconv.kernel_spectrum(k, (h, w)), kernel)
    mixed = stage(
        "product per frequency",
        lambda a, b: jax.lax.dot_general(a, b, (((3,), (2,)), ((0, 1), (0, 1)))),
        stacked,
        m,
    )
    back = stage(
        "to complex (B, C, H, W/2+1)",
        lambda y: jax.lax.complex(y[..., :c], y[..., c:]).transpose(2, 3, 0, 1),
        mixed,
    )
    y = stage("irfft2", lambda y: jnp.fft.irfft2(y, s=(h, w)), back)
    stage("NCHW -> NHWC", lambda y: y.transpose(0, 2, 3, 1), y)
    rows.append(("sum of the stages", sum(t for _, t in rows)))
    stage("whole layer, forward", fftconv.circular_conv_fft, x, kernel)
    loss = lambda x, k: jnp.sum(jnp.sin(fftconv.circular_conv_fft(x, k)))  # noqa: E731
    stage("whole layer, forward + backward", jax.grad(loss, argnums=(0, 1)), x, kernel)
    conv = nn.Conv(channels, (k, k), padding="CIRCULAR", use_bias=False)
    params = {"params": {"kernel": kernel}}
    stage("nn.Conv, forward", lambda x: conv.apply(params, x), x)
    direct = lambda p, x: jnp.sum(jnp.sin(conv.apply(p, x)))  # noqa: E731
    stage("nn.Conv, forward + backward", jax.grad(direct, argnums=(0, 1)), params, x)
    return rows


def time_layer(module, params, x, calls: int, repeats: int) -> tuple[float, jax.Array]:
    """Seconds per forward-and-backward call (best of ``repeats``) and the forward output."""

    def loss(params, x):
        return jnp.sum(jnp.sin(module.apply(params, x)))

    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    jax.block_until_ready(step(params, x))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            out = step(params, x)
        jax.block_until_ready(out)
        best = min(best, (time.perf_counter() - start) / calls)
    return best, jax.jit(module.apply)(params, x)


def measure(k: int, side: int, channels: int, batch: int, calls: int, repeats: int) -> dict:
    x = jax.random.normal(jax.random.key(0), (batch, side, side, channels))
    direct = nn.Conv(channels, (k, k), padding="CIRCULAR", use_bias=False)
    fft = CircularConv(channels, (k, k), padding="CIRCULAR", use_bias=False, method="fft")
    params = direct.init(jax.random.key(1), x)
    t_direct, y_direct = time_layer(direct, params, x, calls, repeats)
    t_fft, y_fft = time_layer(fft, params, x, calls, repeats)
    scale = float(jnp.max(jnp.abs(y_direct)))
    return {
        "kernel": k,
        "side": side,
        "channels": channels,
        "batch": batch,
        "direct_ms": 1e3 * t_direct,
        "fft_ms": 1e3 * t_fft,
        "speedup": t_direct / t_fft,
        "rule_picks_fft": fft_is_faster(jax.default_backend(), (k, k), channels),
        "max_rel_diff": float(jnp.max(jnp.abs(y_fft - y_direct))) / scale,
    }


def main(argv=None):
    args = parse_args(argv)
    device = str(jax.devices()[0])
    if args.stages:
        k, side, ch = args.kernels[0], args.sides[0], args.channels[0]
        print(f"device {device}; {k}x{k}, {side}x{side}, C = {ch}, batch {args.batch}")
        rows = stages(k, side, ch, args.batch)
        for name, ms in rows:
            print(f"{name:>40} {ms:9.2f} ms", flush=True)
        return rows
    print(f"device {device}; batch {args.batch}; forward + backward of one layer", flush=True)
    print(
        f"{'k':>3} {'H':>4} {'C':>4} {'direct ms':>10} {'FFT ms':>9} {'speed-up':>9} "
        f"{'rule':>6} {'rel diff':>9}"
    )
    rows = []
    for k in args.kernels:
        for side in args.sides:
            for ch in args.channels:
                r = measure(k, side, ch, args.batch, args.calls, args.repeats)
                rows.append(r)
                rule = "fft" if r["rule_picks_fft"] else "direct"
                print(
                    f"{k:>3} {side:>4} {ch:>4} {r['direct_ms']:10.2f} {r['fft_ms']:9.2f} "
                    f"{r['speedup']:9.2f} {rule:>6} {r['max_rel_diff']:9.1e}",
                    flush=True,
                )
    if args.json is not None:
        payload = {"config": vars(args), "device": device, "rows": rows}
        payload["environment"] = results.environment()
        results.save_json(args.json, json.loads(json.dumps(payload, default=str)))
    return rows


if __name__ == "__main__":
    main()
