"""Reference outputs of the DAX authors' code for ``tests/parity/test_dax_parity.py``.

Runs the authors' own modules (``iiscleap/DAX`` at commit
``79fe00614d494b574017be3eb0f0494939a7634b``: ``lime/lime_image.py``,
``lime/student_ntw_learn.py``, ``lime/wrappers/scikit_image.py``) on fixed
inputs and saves what they compute to ``tests/fixtures/parity/dax_refs.npz``.
Their code is imported from the checkout given on the command line and never
copied here. Regenerate (from the repository root, about 10 s on a CPU)::

    git clone https://github.com/iiscleap/DAX /tmp/DAX
    git -C /tmp/DAX checkout 79fe00614d494b574017be3eb0f0494939a7634b
    python experiments/parity/dax_refs.py --dax-repo /tmp/DAX

Needs torch, scikit-image, scikit-learn, matplotlib, Pillow and tqdm. Their
modules also import torchvision, cv2, pandas and turtle for things these
references do not use (image transforms the 32×32 inputs skip, a heat-map
picture they write to disk); where those are missing, inert stand-ins are put in
``sys.modules`` first.

Inputs (the test rebuilds the weights with the same recipe, :func:`fixed`):
scikit-image's astronaut photo resized to 32×32; quickshift segments from their
wrapper, with their defaults and with ``kernel_size=2, max_dist=10,
ratio=0.5`` (25 segments, used for the perturbations); ``num_samples=12``
perturbations from their ``LimeImageExplainer`` (``random_state=0``) queried on
a fixed linear 5-class softmax; a fixed batch of the first 8 perturbed images,
rows 2, 3, 5 converted to HSV together and row 0 alone (their first-batch
rule); their ``StudentModel`` with fixed weights (``fc1`` rebuilt for 32×32
inputs, dropout 0 so that the training-mode loss is deterministic).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

NUM_SAMPLES = 12
BATCH = 8
HSV_ROWS = [2, 3, 5]
SIDE = 32
NUM_CLASSES = 5
SNAPSHOT_SEEDS = (11, 12, 13)
QUICKSHIFT = {"kernel_size": 2, "max_dist": 10, "ratio": 0.5}


def fixed(shape: tuple[int, ...], seed: int, scale: float, offset: float = 0.0) -> np.ndarray:
    """Deterministic float32 weights: ``offset + scale · N(0, 1)`` from ``RandomState(seed)``."""
    values = np.random.RandomState(seed).standard_normal(shape)
    return (offset + scale * values).astype(np.float32)


def _stand_ins() -> None:
    """Inert modules for imports the references never exercise."""

    def module(name, **attrs):
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        sys.modules[name] = mod
        return mod

    def identity_transform(*_args, **_kwargs):
        return lambda x: x

    for name, attrs in {
        "turtle": {"forward": None},
        # sklearn looks pandas up in sys.modules: classes nothing is an instance of
        "pandas": {"DataFrame": type("DataFrame", (), {}), "Series": type("Series", (), {})},
        "cv2": {
            "COLORMAP_JET": 2,
            "COLOR_BGR2RGB": 4,
            "applyColorMap": lambda a, _m: np.repeat(a[..., None], 3, axis=-1),
            "addWeighted": lambda a, *_: a,
            "cvtColor": lambda a, _c: a,
        },
    }.items():
        try:
            importlib.import_module(name)
        except ImportError:
            module(name, **attrs)
    try:
        importlib.import_module("torchvision")
    except ImportError:
        tv = module("torchvision")
        tv.transforms = module(
            "torchvision.transforms",
            Compose=lambda steps: lambda x: x,
            Resize=identity_transform,
            CenterCrop=identity_transform,
        )
        tv.models = module("torchvision.models")


@contextlib.contextmanager
def _in_directory(path: Path):
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def _photo() -> np.ndarray:
    from skimage import data, transform

    image = transform.resize(data.astronaut(), (SIDE, SIDE), anti_aliasing=True)
    return image.astype(np.float32)


def _set_weights(model, seed: int, fc1_in: int) -> None:
    """Fixed weights for the authors' StudentModel (``fc1`` rebuilt for ``fc1_in`` inputs)."""
    import torch

    model.student_classifier.fc1 = torch.nn.Linear(fc1_in, 512)
    model.student_classifier.drop.p = 0.0
    gen, stu = model.mask_compute, model.student_classifier
    tensors = {
        gen.conv1[0].weight: fixed((32, 3, 7, 7), seed, 0.05),
        gen.conv1[0].bias: fixed((32,), seed + 1, 0.05),
        gen.conv2[0].weight: fixed((1, 32, 7, 7), seed + 2, 0.05),
        gen.conv2[0].bias: fixed((1,), seed + 3, 0.05),
        stu.fc1.weight: fixed((512, fc1_in), seed + 4, 0.01),
        stu.fc1.bias: fixed((512,), seed + 5, 0.05),
        stu.batch1.weight: fixed((512,), seed + 6, 0.1, 1.0),
        stu.batch1.bias: fixed((512,), seed + 7, 0.1),
        stu.fc2.weight: fixed((1, 512), seed + 8, 0.05),
        stu.fc2.bias: fixed((1,), seed + 9, 0.05),
    }
    with torch.no_grad():
        for tensor, value in tensors.items():
            tensor.copy_(torch.from_numpy(value))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dax-repo", required=True, type=Path, help="checkout of iiscleap/DAX")
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/parity/dax_refs.npz"))
    args = parser.parse_args()
    out = args.out.resolve()

    _stand_ins()
    sys.path.insert(0, str(args.dax_repo.resolve()))
    import torch
    from lime import lime_image, student_ntw_learn
    from lime.wrappers.scikit_image import SegmentationAlgorithm

    torch.set_grad_enabled(True)
    image = _photo()
    image_uint8 = (image * 255.0).astype(np.uint8)  # what their harness segments
    # their default quickshift leaves 2 segments at 32×32: finer ones for the perturbations
    segments_default = SegmentationAlgorithm(
        "quickshift", kernel_size=4, max_dist=200, ratio=0.2, random_seed=42
    )(image_uint8)
    segmenter = SegmentationAlgorithm("quickshift", **QUICKSHIFT, random_seed=42)
    segments = segmenter(image_uint8)

    classifier_w = fixed((SIDE * SIDE * 3, NUM_CLASSES), 1, 0.05)

    def classifier_fn(batch):  # [B, H, W, 3] torch -> softmax probabilities (numpy)
        logits = (
            batch.reshape(batch.shape[0], -1).double() @ torch.from_numpy(classifier_w).double()
        )
        return torch.softmax(logits, dim=1).numpy()

    img_init = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    target = int(np.argmax(classifier_fn(img_init.permute(0, 2, 3, 1))[0]))
    captured = {}

    def capture(ip_images, targets, label_idx, distances, device_id, random_seed):
        captured.update(images=ip_images, probs=targets, distances=distances)

    student_ntw_learn.train = capture  # the reference stops where training starts
    explainer = lime_image.LimeImageExplainer(random_state=0)
    data_labels = explainer.data_labels

    def recording_data_labels(*args, **kwargs):
        result = data_labels(*args, **kwargs)
        captured["z"] = result[1]  # their binary vectors, row 0 all-ones
        return result

    explainer.data_labels = recording_data_labels
    with tempfile.TemporaryDirectory() as tmp, _in_directory(Path(tmp)):
        explainer.explain_instance(
            image_uint8, classifier_fn, top_labels=1, img_init=img_init, hide_color=None,
            batch_size=5, num_samples=NUM_SAMPLES, segmentation_fn=segmenter,
            idx_expl=target, random_seed=42, progress_bar=False,
        )  # fmt: skip
    perturbed = torch.stack(captured["images"]).numpy()  # [N, H, W, 3]
    probs = np.asarray(captured["probs"])
    z = np.asarray(captured["z"])
    weights = student_ntw_learn.kernel(captured["distances"])

    # their first-batch input pipeline on a fixed batch: ÷ max, HSV rows, × 255
    batch = torch.from_numpy(perturbed[:BATCH]).permute(0, 3, 1, 2).contiguous()  # as collated
    batch = batch / batch.max()
    batch[0] = student_ntw_learn.rgb2hsv(batch[0].unsqueeze(0)).squeeze(0)
    batch[HSV_ROWS, :] = student_ntw_learn.rgb2hsv(batch[HSV_ROWS, :])
    net_inputs = batch * 255.0

    targets = torch.from_numpy(probs[:BATCH])
    batch_w = torch.from_numpy(weights[:BATCH])
    model = student_ntw_learn.StudentModel()
    _set_weights(model, 100, 3 * SIDE * SIDE)
    model.train()
    loss, loss_keep, _, _, _ = model(net_inputs, targets, target, batch_w, 1, 0, train=True)
    loss.backward()
    with torch.no_grad():
        mask = model.mask_compute(net_inputs)[:, 0]
    gen, stu = model.mask_compute, model.student_classifier
    grads = {
        "grad_conv1": gen.conv1[0].weight.grad,
        "grad_conv2": gen.conv2[0].weight.grad,
        "grad_bn_scale": stu.batch1.weight.grad,
        "grad_fc2": stu.fc2.weight.grad,
    }

    # snapshots as their first training batch saves them (ind == 0), three generators
    raw, smoothed = [], []
    with tempfile.TemporaryDirectory() as tmp, _in_directory(Path(tmp)):
        (Path(tmp) / "results" / "masks").mkdir(parents=True)
        for seed in SNAPSHOT_SEEDS:
            snap_model = student_ntw_learn.StudentModel()
            _set_weights(snap_model, seed * 100, 3 * SIDE * SIDE)
            snap_model.train()
            with torch.no_grad():
                _, out_mask, saved, _ = snap_model.predict_proba(net_inputs, 0, 0, True)
            raw.append(out_mask[0, 0].numpy())
            smoothed.append(saved)
    combined = np.array(smoothed).mean(axis=0)  # the end of their ``train``
    combined = (combined - combined.min()) / (combined.max() - combined.min())

    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out,
        image=image,
        segments=segments.astype(np.int32),
        segments_default=segments_default.astype(np.int32),
        z=z.astype(np.float32),
        target=np.int32(target),
        perturbed=perturbed.astype(np.float32),
        probs=probs.astype(np.float64),
        weights=weights.astype(np.float64),
        net_inputs=net_inputs.permute(0, 2, 3, 1).numpy(),
        loss=np.float64(loss.item()),
        loss_keep=np.float64(loss_keep.item()),
        mask=mask.numpy(),
        **{name: g.numpy() for name, g in grads.items()},
        snapshot_raw=np.array(raw),
        snapshot_smoothed=np.array(smoothed, np.float32),
        snapshot_combined=combined.astype(np.float32),
    )
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB); target class {target}")


if __name__ == "__main__":
    main()
