"""Reference outputs of the MFABA authors' code for the parity tests (issue 18).

Runs the MFABA authors' ``saliency/saliency_zoo.py`` (LMBTough/MFABA, commit
``363fd52673c7001bf5f5c0b8da1ed04560f1a7ef``), imported from a checkout whose
path is given on the command line (their code is never copied here), on fixed
weights and photos, and writes small ``.npz`` files to ``tests/fixtures/parity/``:

* ``tiny_resnet.safetensors``: a torchvision-layout ResNet (width 8, one block per
  stage, 1000 classes, randomised BatchNorm; :func:`torch_nets.tiny_resnet`, seed 0),
  the network every committed reference uses.
* ``inputs.npz``: scikit-image ``astronaut`` (208 values exactly 0 at 64²),
  ``chelsea``, ``coffee`` and ``camera`` resized to 64×64 (anti-aliased), NHWC
  float32 in [0, 1], and the network's predicted classes.
* ``authors_maps.npz``: the authors' per-channel maps (NHWC, stored float32) of
  ``sm`` (Saliency), ``ig`` (IG, 50 steps, trapezoid), ``mfaba_sharp`` and
  ``mfaba_smooth`` (one batched call on all four photos: their accumulating
  ``FGSMGrad`` depends on the batch), ``mfaba_norm`` and ``mfaba_cos`` (one call per
  photo), ``big`` (batched) and ``agi`` (batched, their false class
  ``random.seed(3407); random.sample(range(999), 1)``, stored as ``agi_class``).
  Everything runs in float64 (network and inputs cast), so the references are
  free of the float32 rounding noise that decides near-tied max-pool windows and
  ReLUs on flat image regions; ``sm_float32`` is the float32 saliency for
  comparison.
* ``resnet18_astronaut.npz`` (only with ``--resnet18``): torch autograd
  saliency of the shared ResNet-18 fixture on the 224² astronaut in float32 and
  float64 (stored float32), for ``table.py``'s optional row.

The authors' ``saliency/core/agi.py`` imports ``torchvision.transforms`` (which
cannot be installed here) for module-level helpers ``agi``/``pgd_step`` never
call; a stub module stands in for it. ``captum`` (``pip install captum``, the
``bench`` extra) is needed for their IG, Saliency and BIG.

Regenerate (about a minute on 2 CPU cores)::

    # with the fetch tool (or git clone https://github.com/LMBTough/MFABA)
    git --git-dir=/work/.mirror/LMBTough+MFABA/repo worktree add /tmp/MFABA 363fd52
    python experiments/parity/make_references.py /tmp/MFABA \\
        [--resnet18 ../shared/fixtures/torchvision_resnet18.safetensors]
"""

from __future__ import annotations

import argparse
import pathlib
import random
import sys
import types

import numpy as np
import torch

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import torch_nets  # noqa: E402

OUT = HERE.parent.parent / "tests" / "fixtures" / "parity"
PHOTOS = ("astronaut", "chelsea", "coffee", "camera")
SIZE = 64
AUTHORS_COMMIT = "363fd52673c7001bf5f5c0b8da1ed04560f1a7ef"


def photos(size: int = SIZE) -> np.ndarray:
    """The scikit-image photos, ``[N, size, size, 3]`` float32 in [0, 1]."""
    from skimage import data, transform

    out = []
    for name in PHOTOS:
        image = getattr(data, name)()
        image = image if image.ndim == 3 else np.stack([image] * 3, axis=-1)
        out.append(transform.resize(image, (size, size), anti_aliasing=True))
    return np.stack(out).astype(np.float32)


def _stub_torchvision() -> None:
    """A ``torchvision.transforms`` whose classes accept anything (never called)."""
    if "torchvision" in sys.modules:
        return
    tv = types.ModuleType("torchvision")
    tv.transforms = types.SimpleNamespace(
        **{n: (lambda *a, **k: None) for n in ("Compose", "Resize", "ToTensor", "Normalize")}
    )
    sys.modules["torchvision"] = tv
    sys.modules["torchvision.transforms"] = tv.transforms


def _nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _nhwc(a) -> np.ndarray:
    a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    return a.transpose(0, 2, 3, 1).astype(np.float32)


def authors_maps(zoo, model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> dict:
    """Every method of the authors' ``saliency_zoo`` the parity tests cover."""
    maps = {
        "sm": zoo.sm(model, x, target),
        "ig": zoo.ig(model, x, target),
        "mfaba_sharp": zoo.mfaba_sharp(model, x, target),
        "mfaba_smooth": zoo.mfaba_smooth(model, x, target),
        "big": zoo.big(model, x, target),
    }
    for name in ("mfaba_norm", "mfaba_cos"):
        fn = getattr(zoo, name)
        maps[name] = np.concatenate(
            [fn(model, x[i : i + 1], target[i : i + 1]) for i in range(len(x))]
        )
    maps["agi"] = zoo.agi(model, x, target)
    return {k: _nhwc(v) for k, v in maps.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mfaba", type=pathlib.Path, help="checkout of LMBTough/MFABA")
    parser.add_argument("--out", type=pathlib.Path, default=OUT)
    parser.add_argument("--resnet18", type=pathlib.Path, default=None)
    args = parser.parse_args(argv)
    _stub_torchvision()
    sys.path.insert(0, str(args.mfaba.resolve()))
    from safetensors.torch import save_file
    from saliency import saliency_zoo as zoo

    args.out.mkdir(parents=True, exist_ok=True)
    net = torch_nets.tiny_resnet(seed=0, num_classes=1000)
    save_file(
        {k: v.contiguous() for k, v in net.state_dict().items() if "num_batches" not in k},
        str(args.out / "tiny_resnet.safetensors"),
    )
    images = photos()
    model32 = torch.nn.Sequential(torch_nets.Normalize(), net).eval()
    x32 = _nchw(images)
    sm32 = _nhwc(zoo.sm(model32, x32.clone(), model32(x32).argmax(-1)))
    torch.set_default_dtype(torch.float64)
    model = torch.nn.Sequential(torch_nets.Normalize(), net).double().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = x32.double()
    with torch.no_grad():
        target = model(x).argmax(-1)
    np.savez_compressed(
        args.out / "inputs.npz", images=images, target=target.numpy(), names=np.array(PHOTOS)
    )
    maps = authors_maps(zoo, model, x, target)
    random.seed(3407)
    agi_class = random.sample(list(range(0, 999)), 1)[0]
    np.savez_compressed(
        args.out / "authors_maps.npz",
        **maps,
        sm_float32=sm32,
        agi_class=np.array(agi_class),
        authors_commit=np.array(AUTHORS_COMMIT),
    )
    if args.resnet18 is not None:
        resnet18_astronaut(args.resnet18, args.out)
    for path in sorted(args.out.iterdir()):
        print(f"{path.name}: {path.stat().st_size / 1024:.0f} KiB")


def resnet18_astronaut(path: pathlib.Path, out: pathlib.Path) -> None:
    """torch saliency of the shared ResNet-18 on the 224² astronaut, float32 and float64."""
    from safetensors.torch import load_file

    torch.set_default_dtype(torch.float32)
    net = torch_nets.ResNet(num_classes=10)
    net.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()}, strict=True)
    model = torch.nn.Sequential(torch_nets.Normalize(), net).eval()
    from skimage import data, transform

    image = transform.resize(data.astronaut(), (224, 224), anti_aliasing=True)
    image = image.astype(np.float32)[None]
    grads = {}
    for name, dtype in (("float32", torch.float32), ("float64", torch.float64)):
        m = model.to(dtype)
        xt = _nchw(image).to(dtype).requires_grad_(True)
        logits = m(xt)
        target = int(logits.argmax(-1))
        logits[0, target].backward()
        grads[name] = _nhwc(xt.grad)
    np.savez_compressed(out / "resnet18_astronaut.npz", target=np.array(target), **grads)


if __name__ == "__main__":
    main()
