"""MFABA-SHARP vs its limit and vs Captum Integrated Gradients, same ResNet-50 weights.

Times, in one run on one machine:

* MFABA-SHARP (``--steps`` steps, jitted, batched ``lax.while_loop``) on the
  Flax ResNet-50, and the same compiled step driven from the host
  (``loop="host"``, the CPU default: XLA:CPU runs convolutions inside loop
  bodies ~1.5× slower, jax-ml/jax#12868);
* the limit: ``--steps`` × one jitted forward+backward of the same model on the
  same batch (also scaled to the loop iterations early stop actually ran);
* Integrated Gradients: ours (JAX, jitted) and Captum's on a plain-``torch.nn``
  ResNet-50 holding the same weights (the fixture's torchvision ResNet-50).

Each part runs in its own subprocess so that peak resident memory
(``ru_maxrss``) is measured per part; JAX parts also report the compiled
program's memory (``memory_analysis``) and, on accelerators, the device's
``peak_bytes_in_use``. MFABA's compiled temp memory is given for ``steps`` and
``4 × steps`` to show it is flat in the step count.

Command (full scale; the small smoke run is ``--image-size 64 --num-images 2``)::

  python experiments/benchmarks/bench_mfaba.py --image-size 224 --num-images 8 \\
      --steps 50 --out runs/bench_mfaba.json

Targets (issue 4): MFABA within 1.15× of its limit; memory flat in steps; JAX
IG faster than Captum IG on the same weights.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import time

FIXTURE = "torchvision_resnet50.safetensors"
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def _fixtures_dir() -> pathlib.Path:
    here = pathlib.Path(__file__).resolve()
    for candidate in (
        os.environ.get("FASTXAI_FIXTURES"),
        here.parents[3] / "shared" / "fixtures",
        here.parents[2] / "shared" / "fixtures",
    ):
        if candidate and (pathlib.Path(candidate) / FIXTURE).exists():
            return pathlib.Path(candidate)
    raise FileNotFoundError(f"{FIXTURE} not found: set FASTXAI_FIXTURES")


def _images(num: int, size: int, seed: int):
    import numpy as np

    return np.random.default_rng(seed).uniform(0, 1, (num, size, size, 3)).astype(np.float32)


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _timed(fn, repeats: int) -> float:
    """Mean seconds of ``fn()`` over ``repeats`` runs after one warm-up (compile) run."""
    fn()
    tic = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - tic) / repeats


# ------------------------------------------------------------------------ JAX


def run_jax(args) -> dict:
    import jax
    import jax.numpy as jnp

    from fastxai_jax.explainers.gradients import integrated_gradients
    from fastxai_jax.explainers.mfaba import mfaba
    from fastxai_jax.models import load_pretrained, make_apply_fn

    module, variables = load_pretrained("resnet50", _fixtures_dir() / FIXTURE)
    apply_fn = make_apply_fn(module, "imagenet")
    x = jnp.asarray(_images(args.num_images, args.image_size, args.seed))
    target = jnp.argmax(apply_fn(variables, x), axis=-1).astype(jnp.int32)
    rss_loaded = _rss_mib()
    result: dict = {"device": str(jax.devices()[0]), "backend": jax.default_backend()}

    def mfaba_fn(v, xs, t, num_steps=args.steps):
        return mfaba(
            apply_fn,
            v,
            xs,
            t,
            num_steps=num_steps,
            early_stop=not args.no_early_stop,
            return_steps=True,
        )

    mfaba_jit = jax.jit(mfaba_fn)  # under jit: the lax.while_loop path
    _, steps = mfaba_jit(variables, x, target)
    steps = jax.device_get(steps)
    t_mfaba = _timed(lambda: jax.block_until_ready(mfaba_jit(variables, x, target)), args.repeats)
    host = lambda: mfaba(
        apply_fn, variables, x, target, num_steps=args.steps,
        early_stop=not args.no_early_stop, loop="host",
    )  # fmt: skip
    t_host = _timed(lambda: jax.block_until_ready(host()), args.repeats)
    compiled = {}
    for n in (args.steps, 4 * args.steps):
        lowered = jax.jit(lambda v, xs, t, n=n: mfaba_fn(v, xs, t, n)).lower(variables, x, target)
        analysis = lowered.compile().memory_analysis()
        compiled[n] = {
            "temp_bytes": int(analysis.temp_size_in_bytes),
            "argument_bytes": int(analysis.argument_size_in_bytes),
            "output_bytes": int(analysis.output_size_in_bytes),
        }

    def score(xs, v):
        logits = apply_fn(v, xs)
        probs = jax.nn.softmax(logits, axis=-1)
        return jnp.sum(jnp.take_along_axis(probs, target[:, None], axis=-1)), logits

    fwd_bwd = jax.jit(jax.value_and_grad(score, has_aux=True))
    t_fb = _timed(lambda: jax.block_until_ready(fwd_bwd(x, variables)), args.repeats)
    iterations = int(steps.max())  # the while_loop runs until the slowest sample stops

    ig_jit = jax.jit(
        lambda v, xs, t: integrated_gradients(
            apply_fn, v, xs, t, num_steps=args.steps, batch_size=args.ig_batch
        )
    )
    t_ig_scan = _timed(lambda: jax.block_until_ready(ig_jit(variables, x, target)), args.repeats)

    def ig_auto():  # not under jit: the host chunk loop on CPU, the scan elsewhere
        return integrated_gradients(
            apply_fn, variables, x, target, num_steps=args.steps, batch_size=args.ig_batch
        )

    t_ig = _timed(lambda: jax.block_until_ready(ig_auto()), args.repeats)
    ig_analysis = ig_jit.lower(variables, x, target).compile().memory_analysis()
    stats = jax.devices()[0].memory_stats() or {}
    n_img = args.num_images
    result.update(
        mfaba_seconds_per_image=t_mfaba / n_img,
        mfaba_host_loop_seconds_per_image=t_host / n_img,
        ratio_mfaba_host_loop_to_limit=t_host / (args.steps * t_fb),
        mfaba_steps_per_sample=steps.tolist(),
        mfaba_loop_iterations=iterations,
        fwd_bwd_seconds_per_image=t_fb / n_img,
        limit_seconds_per_image=args.steps * t_fb / n_img,
        limit_taken_seconds_per_image=(iterations + 1) * t_fb / n_img,
        ratio_mfaba_to_limit=t_mfaba / (args.steps * t_fb),
        ratio_mfaba_to_limit_taken=t_mfaba / ((iterations + 1) * t_fb),
        mfaba_compiled_memory=compiled,
        mfaba_temp_ratio_4x_steps=compiled[4 * args.steps]["temp_bytes"]
        / max(1, compiled[args.steps]["temp_bytes"]),
        jax_ig_seconds_per_image=t_ig / n_img,
        jax_ig_scan_seconds_per_image=t_ig_scan / n_img,
        jax_ig_loop="host" if jax.default_backend() == "cpu" else "scan",
        jax_ig_temp_bytes=int(ig_analysis.temp_size_in_bytes),
        device_peak_bytes=stats.get("peak_bytes_in_use"),
        rss_peak_mib=_rss_mib(),
        rss_after_load_mib=rss_loaded,
        targets=jax.device_get(target).tolist(),
    )
    return result


# ---------------------------------------------------------------------- torch


def _torch_resnet50(num_classes: int):
    import torch
    from torch import nn

    class Bottleneck(nn.Module):
        expansion = 4

        def __init__(self, in_planes: int, planes: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * 4)
            self.relu = nn.ReLU()
            self.downsample = None
            if stride != 1 or in_planes != planes * 4:
                self.downsample = nn.Sequential(
                    nn.Conv2d(in_planes, planes * 4, 1, stride, bias=False),
                    nn.BatchNorm2d(planes * 4),
                )

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            identity = x if self.downsample is None else self.downsample(x)
            return self.relu(out + identity)

    class ResNet50(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU()
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            in_planes = 64
            for index, (planes, blocks) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3))):
                layers = []
                for b in range(blocks):
                    stride = 2 if (index > 0 and b == 0) else 1
                    layers.append(Bottleneck(in_planes, planes, stride))
                    in_planes = planes * 4
                setattr(self, f"layer{index + 1}", nn.Sequential(*layers))
            self.fc = nn.Linear(2048, num_classes)

        def forward(self, x01):
            x = (x01 - self.mean) / self.std
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(torch.mean(x, dim=(2, 3)), 1))

    return ResNet50()


def run_torch(args) -> dict:
    import numpy as np
    import torch
    from captum.attr import IntegratedGradients
    from safetensors.torch import load_file

    torch.set_num_threads(os.cpu_count() or 1)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    state = {k: v.float() for k, v in load_file(_fixtures_dir() / FIXTURE).items()}
    model = _torch_resnet50(state["fc.weight"].shape[0])
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in ("mean", "std") and "num_batches" not in k]
    if missing or unexpected:
        raise RuntimeError(f"weights do not fit: missing {missing}, unexpected {unexpected}")
    model = model.eval().to(device)
    x = torch.from_numpy(_images(args.num_images, args.image_size, args.seed))
    x = x.permute(0, 3, 1, 2).contiguous().to(device)
    with torch.no_grad():
        logits = model(x)
    target = logits.argmax(-1)
    rss_loaded = _rss_mib()
    ig = IntegratedGradients(model)

    def attribute():
        out = ig.attribute(
            x, target=target, n_steps=args.steps, internal_batch_size=args.ig_batch * x.shape[0]
        )
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t_ig = _timed(attribute, args.repeats)
    return {
        "device": str(device),
        "captum_ig_seconds_per_image": t_ig / args.num_images,
        "torch_cuda_peak_bytes": torch.cuda.max_memory_allocated()
        if device.type == "cuda"
        else None,
        "rss_peak_mib": _rss_mib(),
        "rss_after_load_mib": rss_loaded,
        "logits": np.asarray(logits.cpu()).tolist(),
        "targets": target.cpu().tolist(),
    }


# ----------------------------------------------------------------------- main


def _subprocess(part: str, argv: list[str]) -> dict:
    cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), "--part", part, *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"part {part} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--num-images", type=int, default=8)
    parser.add_argument("--steps", type=int, default=50, help="MFABA steps = IG steps")
    parser.add_argument("--ig-batch", type=int, default=10, help="IG path points per chunk")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs after warm-up")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-captum", action="store_true")
    parser.add_argument(
        "--no-early-stop", action="store_true", help="run all MFABA steps (a worst-case timing)"
    )
    parser.add_argument("--out", default="runs/bench_mfaba.json")
    parser.add_argument("--part", choices=["jax", "torch"], default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.part == "jax":
        print(json.dumps(run_jax(args)))
        return 0
    if args.part == "torch":
        print(json.dumps(run_torch(args)))
        return 0
    passthrough = [
        f"--image-size={args.image_size}",
        f"--num-images={args.num_images}",
        f"--steps={args.steps}",
        f"--ig-batch={args.ig_batch}",
        f"--repeats={args.repeats}",
        f"--seed={args.seed}",
    ] + (["--no-early-stop"] if args.no_early_stop else [])
    report = {"config": {k: v for k, v in vars(args).items() if k != "part"}}
    report["jax"] = _subprocess("jax", passthrough)
    if not args.skip_captum:
        report["torch"] = _subprocess("torch", passthrough)
        report["ratio_captum_ig_to_jax_ig"] = (
            report["torch"]["captum_ig_seconds_per_image"]
            / report["jax"]["jax_ig_seconds_per_image"]
        )
        report["ratio_captum_ig_to_mfaba"] = (
            report["torch"]["captum_ig_seconds_per_image"]
            / report["jax"]["mfaba_seconds_per_image"]
        )
        report["same_predictions"] = report["torch"]["targets"] == report["jax"]["targets"]
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    j = report["jax"]
    print(
        f"device: {j['device']}  images: {args.num_images} x {args.image_size}^2  "
        f"steps: {args.steps}"
    )
    print(
        f"MFABA-SHARP   {j['mfaba_seconds_per_image']:.4f} s/img  "
        f"(loop iterations {j['mfaba_loop_iterations']}, "
        f"steps/sample {j['mfaba_steps_per_sample']})"
    )
    print(
        f"limit         {j['limit_seconds_per_image']:.4f} s/img  ({args.steps} x fwd+bwd)  "
        f"ratio {j['ratio_mfaba_to_limit']:.3f}; vs iterations run: "
        f"{j['ratio_mfaba_to_limit_taken']:.3f}"
    )
    print(
        f"MFABA host    {j['mfaba_host_loop_seconds_per_image']:.4f} s/img  (loop='host', "
        f"ratio to limit {j['ratio_mfaba_host_loop_to_limit']:.3f})"
    )
    mem = j["mfaba_compiled_memory"]
    print(
        f"MFABA temp    {mem[str(args.steps)]['temp_bytes'] / 2**20:.1f} MiB "
        f"at {args.steps} steps, "
        f"{mem[str(4 * args.steps)]['temp_bytes'] / 2**20:.1f} MiB at {4 * args.steps} "
        f"(ratio {j['mfaba_temp_ratio_4x_steps']:.3f}); JAX peak RSS {j['rss_peak_mib']:.0f} MiB"
    )
    print(
        f"JAX IG        {j['jax_ig_seconds_per_image']:.4f} s/img  (loop={j['jax_ig_loop']}; "
        f"under jit, lax.scan: {j['jax_ig_scan_seconds_per_image']:.4f} s/img)"
    )
    if "torch" in report:
        t = report["torch"]
        print(
            f"Captum IG     {t['captum_ig_seconds_per_image']:.4f} s/img  peak RSS "
            f"{t['rss_peak_mib']:.0f} MiB  "
            f"(Captum/JAX IG {report['ratio_captum_ig_to_jax_ig']:.2f}x, "
            f"Captum IG/MFABA {report['ratio_captum_ig_to_mfaba']:.2f}x, "
            f"same predictions: {report['same_predictions']})"
        )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
