"""The built-in demo task: ``DigitsNet`` on scikit-learn's 8x8 digits, upsampled to 32x32.

Training is deterministic and cached, so the first ``autotune`` run pays a few seconds once and
every later run (and every parallel test process) loads the same checkpoint.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from autotune._util import cache_root
from autotune.task._distill import knowledge_distill, teacher_outputs
from autotune.task._task import Runner, Task
from autotune.task.zoo import DigitsNet

#: Bump whenever DigitsNet, the data pipeline or the training recipe changes.
DEMO_VERSION = "v1"
DEMO_WIDTH = 32
IMAGE_SIZE = 32
DISTILL_SUBSET = 768  # training images the demo's finetune distills on
_MEAN, _STD = 0.30, 0.32  # of the upsampled digits scaled to [0, 1] (rounded)

#: How many times this process trained / loaded the demo model (lets tests check the cache).
CACHE_STATS = {"trained": 0, "loaded": 0}


class DigitsSplits(NamedTuple):
    """Train / held-out test split; images (N, 1, 32, 32) float32, labels (N,) int64."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_digits_splits(seed: int = 0) -> DigitsSplits:
    """scikit-learn digits, bilinearly upsampled to 32x32, normalised, stratified 80/20 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    images = torch.from_numpy(data.images.astype(np.float32) / 16.0).unsqueeze(1)
    images = F.interpolate(images, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    x = ((images - _MEAN) / _STD).numpy().astype(np.float32)
    y = data.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, stratify=y, random_state=seed)
    return DigitsSplits(np.ascontiguousarray(x_train), y_train, np.ascontiguousarray(x_test), y_test)


def cache_path(seed: int = 0) -> Path:
    """Where the trained demo checkpoint lives: ``$AUTOTUNE_CACHE`` (a directory) or
    ``~/.cache/autotune``, file ``demo-digitsnet-<version>[-seed<n>].pt``."""
    root = cache_root()
    suffix = "" if seed == 0 else f"-seed{seed}"
    return Path(root) / f"demo-digitsnet-{DEMO_VERSION}{suffix}.pt"


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _train(seed: int, epochs: int = 3, lr: float = 6e-3) -> DigitsNet:
    splits = load_digits_splits(seed)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = DigitsNet(DEMO_WIDTH)
    x = torch.from_numpy(splits.x_train)
    y = torch.from_numpy(splits.y_train)
    batch_size = 64
    steps_per_epoch = (len(x) + batch_size - 1) // batch_size
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.25
    )
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(steps_per_epoch):
            idx = perm[i * batch_size : (i + 1) * batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def train_demo_model(seed: int = 0) -> DigitsNet:
    """The trained FP32 demo ``DigitsNet`` (eval mode), loaded from the cache or trained once.

    Training is deterministic (fixed seeds, 2 torch threads) and takes ~20 s on 2 idle cores; the
    checkpoint is written atomically so concurrent processes never read a partial file.
    """
    path = cache_path(seed)
    model = DigitsNet(DEMO_WIDTH)
    if path.is_file():
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except (OSError, RuntimeError, EOFError, KeyError, ValueError, pickle.UnpicklingError):
            # corrupt or stale file: retrain and overwrite it
            pass
        else:
            CACHE_STATS["loaded"] += 1
            return model.eval()
    with _torch_threads(2):
        model = _train(seed)
    CACHE_STATS["trained"] += 1
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(model.state_dict(), f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return model


def accuracy(runner: Runner, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float:
    """Top-1 accuracy in percent of ``runner`` (logits out) over ``x`` / ``y``."""
    correct = 0
    for i in range(0, len(x), batch_size):
        logits = np.asarray(runner(x[i : i + batch_size]))
        correct += int((logits.argmax(axis=-1) == y[i : i + batch_size]).sum())
    return 100.0 * correct / len(x)


def teacher_logits(teacher: nn.Module, x: np.ndarray) -> np.ndarray:
    """The teacher's logits on ``x`` (eval mode, no grad), for reuse across ``distill`` calls."""
    return teacher_outputs(teacher, (torch.from_numpy(x),)).numpy()


def distill(
    student: nn.Module,
    teacher: nn.Module,
    x_train: np.ndarray,
    steps: int = 40,
    lr: float = 3e-3,
    temperature: float = 4.0,
    *,
    y_train: np.ndarray | None = None,
    batch_size: int = 16,
    alpha: float = 0.7,
    seed: int = 0,
    logits: np.ndarray | None = None,
) -> None:
    """The demo's recipe on numpy arrays: :func:`~autotune.task._distill.knowledge_distill` (the
    package's one distillation loop, which the builder's ``--recover kd`` runs too) with the
    demo's defaults, 40 steps of 16 images, cross-entropy on ``y_train`` when given. ``logits``
    may hold precomputed :func:`teacher_logits` for ``x_train``. Leaves the student in eval mode.
    """
    knowledge_distill(
        student,
        teacher,
        (torch.from_numpy(np.ascontiguousarray(x_train, dtype=np.float32)),),
        steps=steps,
        lr=lr,
        temperature=temperature,
        batch_size=batch_size,
        labels=None if y_train is None else torch.from_numpy(np.asarray(y_train, dtype=np.int64)),
        alpha=alpha,
        seed=seed,
        targets=None if logits is None else torch.from_numpy(np.asarray(logits, dtype=np.float32)),
    )


def _fingerprint(model: nn.Module) -> str:
    h = hashlib.sha1()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def demo_task() -> Task:
    """The ``demo-digits`` task: trained DigitsNet, accuracy on the held-out digits."""
    splits = load_digits_splits()
    model = train_demo_model()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(splits.x_train))
    calibration = [(splits.x_train[order[i * 32 : (i + 1) * 32]],) for i in range(8)]
    # Distillation draws from a fixed subset whose teacher logits are computed once per process.
    x_distill, y_distill = splits.x_train[order[:DISTILL_SUBSET]], splits.y_train[order[:DISTILL_SUBSET]]
    cached: dict[str, np.ndarray] = {}

    def evaluate(runner: Runner) -> float:
        return accuracy(runner, splits.x_test, splits.y_test)

    def finetune(student: nn.Module, teacher: nn.Module) -> None:
        key = _fingerprint(teacher)
        if key not in cached:
            cached.clear()
            cached[key] = teacher_logits(teacher, x_distill)
        with _torch_threads(2):
            distill(student, teacher, x_distill, y_train=y_distill, logits=cached[key])

    return Task(
        source=model,
        example_inputs=(torch.from_numpy(splits.x_test[:1].copy()),),
        evaluate=evaluate,
        calibration=calibration,
        finetune=finetune,
        name="demo-digits",
        metric="accuracy",
    )
