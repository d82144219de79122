"""Throughput of the Monte-Carlo engine, against the RNG bound and a PyTorch peer.

For each (R networks, B inputs, width n, depth L) row, measured after a warm-up call:

* ``meanfield``: :func:`meanfield.montecarlo.simulate`, forward and backward, all statistics;
* ``rng bound``: the engine's sampler (:func:`meanfield.core.sampling.standard_normal`) alone
  drawing the same R·L·n² weights (jitted, chunked); the engine draws every weight twice
  (forward, and again in the checkpointed backward);
* ``torch``: a straightforward PyTorch implementation of the same computation (weights drawn
  with torch.randn per layer for a chunk of networks, torch.bmm, autograd backward, the same
  statistics), skipped with a message where torch is not installed.

Printed: seconds, network-layers per second (R·L / s), weights per second (R·L·n² / s) and the
ratios engine / rng bound and engine / torch (the explicit-weight engine). ``--scale``
multiplies every R (use 1/16 on a laptop CPU). ``--engines`` instead compares the weight-free
engine with the explicit engine and the PyTorch peer over a grid of widths and batch sizes
(the peer only where one network's weights and gradients fit in ``--torch-gib``). ``--rng``
measures the normal samplers alone, per network and layer as the engines draw them:
``sampling.standard_normal`` against ``jax.random.normal`` (JAX's default counter layout and
its original one, which gives the same numbers as the engine's sampler) and ``torch.randn``.
Usage:

    python benchmarks/bench_montecarlo.py [--scale 0.0625] [--block relu-none-residual]
    python benchmarks/bench_montecarlo.py --engines --networks 4 --figure docs/weightfree.png
    python benchmarks/bench_montecarlo.py --rng
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from meanfield import Block, montecarlo  # noqa: E402
from meanfield.core.sampling import standard_normal  # noqa: E402

ROWS = ((1024, 1, 256, 100), (1024, 64, 256, 100), (4096, 16, 128, 100), (256, 256, 1024, 50))


def time_call(fn, repeats: int = 1, min_seconds: float = 1.0, max_repeats: int = 10) -> float:
    """Best of timed runs after a warm-up run: at least ``repeats``, and more (up to
    ``max_repeats``) until they add up to ``min_seconds``, so that short rows are not one
    noisy sample."""
    fn()  # warm-up: compilation and first-touch allocations
    times: list[float] = []
    while len(times) < repeats or (sum(times) < min_seconds and len(times) < max_repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_engine(block, R, B, n, L, chunk_size, precision):
    def run():
        est = montecarlo.simulate(
            block,
            key=jax.random.key(0),
            depth=L,
            width=n,
            var_w=2.0 / n,
            networks=R,
            batch=B,
            chunk_size=chunk_size,
            precision=precision,
            engine="explicit",  # the rows measure the explicit-weight engine
            warn=False,
        )
        return est.m2_z.mean

    return time_call(run)


def bench_rng(R, n, L, chunk_size):
    per_call = max(1, min(R, chunk_size or R))

    @jax.jit
    def draw(key):
        keys = jax.random.split(key, per_call)

        def one(k):
            def layer(acc, l):
                w = standard_normal(jax.random.fold_in(k, l), (n, n), jnp.float32)
                # Consume every entry: with w[0, 0] alone XLA skips part of the generation.
                return acc + jnp.sum(w), None

            acc, _ = jax.lax.scan(layer, jnp.float32(0), jnp.arange(L))
            return acc

        return jnp.sum(jax.vmap(one)(keys))

    calls = -(-R // per_call)

    def run():
        out = [draw(jax.random.key(i)) for i in range(calls)]
        return jax.block_until_ready(out)

    return time_call(run) * R / (calls * per_call)


def bench_torch(block, R, B, n, L, chunk):
    try:
        import torch
    except ImportError:
        return None
    torch.manual_seed(0)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    if dev == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # full float32, as the engine's default
    act = torch.relu if block.activation == "relu" else (lambda u: u)

    def bn(z):
        c = z - z.mean(1, keepdim=True)
        return c / c.pow(2).mean(1, keepdim=True).sqrt()

    def chunk_stats(r):
        x = torch.randn(r, B, n, device=dev)
        g = torch.randn(r, B, n, device=dev)
        std = (2.0 / n) ** 0.5
        ws = [(torch.randn(r, n, n, device=dev) * std).requires_grad_() for _ in range(L)]
        z, zs = x, []
        for w in ws:
            if block.norm == "none":
                h = act(torch.bmm(z, w))
            elif block.norm == "bn_post":
                h = act(torch.bmm(bn(z), w))
            else:
                h = torch.bmm(act(bn(z)), w)
            z = z + h if block.residual else h
            z.retain_grad()
            zs.append(z)
        (g * z).sum().backward()
        m2_z = torch.stack([t.detach().pow(2).mean((1, 2)) for t in zs])
        m2_dz = torch.stack([t.grad.pow(2).mean((1, 2)) for t in zs])
        var_dw = torch.stack([w.grad.pow(2).sum((1, 2)) / (n * n * B) for w in ws])
        return m2_z, m2_dz, var_dw

    def run():
        done = 0
        while done < R:
            r = min(chunk, R - done)
            out = chunk_stats(r)
            done += r
        if dev == "cuda":
            torch.cuda.synchronize()
        return out

    return time_call(run)


RNG_SHAPES = ((8, 4096), (16, 1024), (256, 256), (1024, 1024))


def _jax_normal_original(key, shape, dtype):
    with jax.threefry_partitionable(False):
        return jax.random.normal(key, shape, dtype)


def bench_samplers(shapes, networks, total, no_torch=False):
    """Normals per second of each sampler, drawing ``shape`` per network and layer from
    ``fold_in(network key, layer)`` inside a ``lax.scan``, vmapped over ``networks`` (the
    engines' pattern), about ``total`` normals per timed call; every draw is consumed by a
    sum so that XLA generates all of it."""
    samplers = {
        "meanfield": standard_normal,
        "jax default": jax.random.normal,
        "jax original": _jax_normal_original,
    }
    print(f"\nnormal samplers, {networks} networks vmapped, ~{total:.0e} normals per call")
    print(
        f"{'shape':>12} | "
        + " ".join(f"{k + ' /s':>16}" for k in samplers)
        + f" | {'torch /s':>10} | {'vs jax default':>14} {'vs torch':>9}"
    )
    for shape in shapes:
        per = shape[0] * shape[1]
        layers = max(1, int(total // (networks * per)))
        rates = {}
        for name, fn in samplers.items():

            @jax.jit
            def draw(keys, fn=fn, shape=shape, layers=layers):
                def one(k):
                    def layer(acc, l):
                        return acc + jnp.sum(fn(jax.random.fold_in(k, l), shape, jnp.float32)), None

                    return jax.lax.scan(layer, jnp.float32(0), jnp.arange(layers))[0]

                return jax.vmap(one)(keys)

            keys = jax.random.split(jax.random.key(0), networks)
            rates[name] = (
                networks
                * layers
                * per
                / time_call(lambda draw=draw, keys=keys: draw(keys).block_until_ready(), repeats=3)
            )
        torch_rate = None if no_torch else _torch_randn_rate(shape, networks, layers)
        torch_col = "n/a" if torch_rate is None else f"{torch_rate:.3e}"
        vs_torch = "" if torch_rate is None else f"{rates['meanfield'] / torch_rate:9.2f}"
        print(
            f"{str(shape):>12} | "
            + " ".join(f"{v:16.3e}" for v in rates.values())
            + f" | {torch_col:>10} | {rates['meanfield'] / rates['jax default']:14.2f} {vs_torch}",
            flush=True,
        )


def _torch_randn_rate(shape, networks, layers):
    try:
        import torch
    except ImportError:
        return None
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator(device=dev).manual_seed(0)

    def run():
        acc = torch.zeros((), device=dev)
        for _ in range(layers):
            acc += torch.randn((networks, *shape), generator=gen, device=dev).sum()
        if dev == "cuda":
            torch.cuda.synchronize()
        return acc

    return networks * layers * shape[0] * shape[1] / time_call(run, repeats=3)


def bench_engines(block, widths, batches, depth, networks, out_png=None, torch_gib=None):
    """Weight-free against explicit (and the PyTorch peer, which stores every weight and its
    gradient: rows where one network's would exceed ``torch_gib`` GiB are skipped; None: no
    peer): network-layers per second over a grid of (n, B)."""
    print(f"\nweight-free vs explicit, block {block.name}, L = {depth}, R = {networks}")
    print(
        f"{'n':>5} {'B':>4} | {'explicit s':>10} {'net-layers/s':>13} | {'weightfree s':>12} "
        f"{'net-layers/s':>13} | {'speed-up':>8} | {'torch s':>8} {'wf speed-up':>11}"
    )
    rows = []
    for n in widths:
        for B in batches:
            times = {}
            for engine in ("explicit", "weightfree"):

                def run(engine=engine, n=n, B=B):
                    return montecarlo.simulate(
                        block,
                        key=jax.random.key(0),
                        depth=depth,
                        width=n,
                        var_w=2.0 / n,
                        networks=networks,
                        batch=B,
                        engine=engine,
                        warn=False,
                    ).m2_z.mean

                times[engine] = time_call(run)
            torch_cols, t_torch = f"{'-':>8} {'-':>11}", None
            if torch_gib is not None:
                need = 2 * depth * n * n * 4 / 2**30  # weights and their gradients, one network
                if need > torch_gib:
                    torch_cols = f"{'skipped':>8} {f'({need:.0f} GiB)':>11}"
                else:
                    chunk = max(1, int(torch_gib // need))
                    t_torch = bench_torch(block, networks, B, n, depth, chunk)
                    if t_torch is not None:
                        torch_cols = f"{t_torch:8.3f} {t_torch / times['weightfree']:11.1f}"
            rate = {k: networks * depth / v for k, v in times.items()}
            rows.append((n, B, times["explicit"], times["weightfree"], t_torch))
            print(
                f"{n:>5} {B:>4} | {times['explicit']:10.3f} {rate['explicit']:13.3e} | "
                f"{times['weightfree']:12.3f} {rate['weightfree']:13.3e} | "
                f"{times['explicit'] / times['weightfree']:8.1f} | {torch_cols}",
                flush=True,
            )
    if out_png:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(4.5, 3.4), layout="constrained")
        ax = fig.subplots()
        for B in batches:
            sel = [r for r in rows if r[1] == B]
            ns = [r[0] for r in sel]
            ax.plot(ns, [networks * depth / r[2] for r in sel], "o--", label=f"explicit, B={B}")
            ax.plot(ns, [networks * depth / r[3] for r in sel], "s-", label=f"weight-free, B={B}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("width n")
        ax.set_ylabel("network-layers per second")
        ax.set_title(f"{jax.devices()[0].device_kind}: {block.name}, L = {depth}", fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6.5, frameon=False)
        fig.savefig(out_png, dpi=150)
        print(f"figure: {out_png}")
    return [
        dict(width=n, batch=B, explicit_s=te, weightfree_s=tw, torch_s=tt)
        for n, B, te, tw, tt in rows
    ]


def bench_rows(block, scale=1.0, precision="highest", torch_chunk=64, rows=ROWS) -> list[dict]:
    """The (R, B, n, L) rows (every R times ``scale``): the engine, its RNG bound and the
    PyTorch peer (None: skipped), printed as they come and returned."""
    header = (
        f"{'R':>6} {'B':>4} {'n':>5} {'L':>4} | {'engine s':>9} {'net-layers/s':>13} "
        f"{'weights/s':>10} | {'rng-bound s':>11} {'engine/rng':>10} | {'torch s':>8} "
        f"{'engine/torch':>12}"
    )
    print(header)
    print("-" * len(header))
    out = []
    for R, B, n, L in rows:
        R = max(2, int(round(R * scale)))
        if block.norm != "none" and B < 2:
            print(f"{R:>6} {B:>4} {n:>5} {L:>4} | skipped: BN needs B >= 2")
            continue
        chunk = montecarlo.auto_chunk_size(L, n, B, R)
        t_engine = bench_engine(block, R, B, n, L, chunk, precision)
        # The engine draws each weight twice (forward and checkpointed backward): compare
        # with drawing each weight once, the best any weight-sampling engine can do.
        t_rng = bench_rng(R, n, L, chunk)
        t_torch = None if torch_chunk is None else bench_torch(block, R, B, n, L, torch_chunk)
        torch_cols = (
            "    n/a" + " " * 14
            if t_torch is None
            else f"{t_torch:8.2f} {t_torch / t_engine:12.2f}"
        )
        print(
            f"{R:>6} {B:>4} {n:>5} {L:>4} | {t_engine:9.2f} {R * L / t_engine:13.3e} "
            f"{R * L * n * n / t_engine:10.3e} | {t_rng:11.2f} {t_rng / t_engine:10.2f} | "
            f"{torch_cols}",
            flush=True,
        )
        out.append(
            dict(
                networks=R,
                batch=B,
                width=n,
                depth=L,
                engine_s=t_engine,
                rng_bound_s=t_rng,
                torch_s=t_torch,
            )
        )
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", type=float, default=1.0, help="multiply every row's R by this")
    p.add_argument("--block", default="relu-none-residual", help="block name (B = 1 needs no BN)")
    p.add_argument("--precision", default="highest", choices=sorted(montecarlo.PRECISIONS))
    p.add_argument("--torch-chunk", type=int, default=64, help="networks per torch batch")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch peer")
    p.add_argument(
        "--engines",
        action="store_true",
        help="instead: weight-free vs explicit over n in --widths, B in --batches",
    )
    p.add_argument("--widths", type=int, nargs="+", default=[256, 1024, 4096])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64])
    p.add_argument("--depth", type=int, default=100, help="L of the --engines grid")
    p.add_argument("--networks", type=int, default=16, help="R of the --engines grid")
    p.add_argument("--figure", default=None, help="--engines: save a log-log figure here")
    p.add_argument(
        "--torch-gib",
        type=float,
        default=8.0,
        help="--engines: memory the PyTorch peer may use for stored weights and gradients",
    )
    p.add_argument(
        "--rng", action="store_true", help="instead: the normal samplers alone (normals/s)"
    )
    p.add_argument(
        "--rng-normals", type=float, default=1e8, help="--rng: normals drawn per timed call"
    )
    args = p.parse_args(argv)
    block = Block.from_name(args.block)
    if args.rng:
        print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()})")
        bench_samplers(RNG_SHAPES, 32, args.rng_normals, no_torch=args.no_torch)
        return
    if args.engines:
        torch_gib = None if args.no_torch else args.torch_gib
        bench_engines(
            block, args.widths, args.batches, args.depth, args.networks, args.figure, torch_gib
        )
        return
    print(
        f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), "
        f"{jax.device_count()} device(s); block {block.name}; precision {args.precision}"
    )
    bench_rows(block, args.scale, args.precision, None if args.no_torch else args.torch_chunk)
    if not args.no_torch:
        try:
            import torch  # noqa: F401
        except ImportError:
            print("torch is not installed: the PyTorch peer was skipped")


if __name__ == "__main__":
    main()
