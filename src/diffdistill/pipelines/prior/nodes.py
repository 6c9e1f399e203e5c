"""Nodes of the `prior` pipeline (the prior, i.e. diffusers, is imported inside the nodes: building the graph stays
light)."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import torch

from diffdistill.config import build
from diffdistill.data.bundle import TensorBundle, to_signed, to_unit
from diffdistill.pipelines.artifacts import PriorModel
from diffdistill.pipelines.metrics import as_mlflow_history, as_mlflow_metrics
from diffdistill.workdir import WorkDir, module_fingerprint, split_fingerprint

if TYPE_CHECKING:
    from diffdistill.prior import LatentPrior
    from diffdistill.prior.config import PriorConfig

logger = logging.getLogger(__name__)


def _load_pretrained(config: PriorConfig, train_set: TensorBundle, device: str) -> LatentPrior:
    from diffdistill.prior import imagenet_class_ids, load_components, load_dit_folder

    ids = config.class_ids or (imagenet_class_ids(config.imagenet_subset) if config.imagenet_subset else None)
    # A pretrained prior serves the data at the data's resolution and channels (resized to and from its native
    # size; grayscale repeated into an RGB VAE and averaged back).
    images = train_set["images"]
    common = {"class_ids": ids, "class_names": train_set.class_names, "device": device,
              "data_size": int(images.shape[-1]), "data_channels": int(images.shape[1])}
    if config.dit_folder and config.source in ("dit_folder", "fine_tune"):
        prior = load_dit_folder(config.dit_folder, **common)
    else:
        parts = config.components
        prior = load_components(parts.vae, parts.denoiser, parts.scheduler, **common)
    prior.check_dataset(num_classes=train_set.num_classes, image_size=int(images.shape[-1]),
                        channels=int(images.shape[1]))
    return prior


def build_prior(train_set: TensorBundle, params: dict[str, Any], device: str) -> tuple[PriorModel, dict[str, Any]]:
    """Train the prior here (`train`), its denoiser only on a frozen local VAE (`train_denoiser`), continue a
    local one (`fine_tune`), or load a local folder as is."""
    from diffdistill.prior import train_prior
    from diffdistill.prior.config import PriorConfig

    config = build(PriorConfig, params, "prior")
    if config.source in ("dit_folder", "components"):
        return _load_pretrained(config, train_set, device), {}
    train = config.train_config(device)
    images = to_signed(to_unit(train_set["images"]))
    frozen_vae, key = None, [train.to_dict(), split_fingerprint(train_set)]
    if config.source == "train_denoiser":  # a local pretrained VAE, frozen; only the denoiser is trained here
        from diffdistill.prior import load_vae

        frozen_vae = load_vae(config.components.vae).to(device)
        key += [module_fingerprint(frozen_vae), config.native_size]
    work = WorkDir.keyed("prior", *key)
    history: dict[str, list[float]] = {}

    def on_step(step: int, metrics: dict[str, float]) -> None:  # the MLflow history; progress is the core's
        for key, value in metrics.items():
            history.setdefault(key.replace("/", "_"), []).append(value)

    start = time.perf_counter()
    prior = train_prior(images, train_set["labels"], train, num_classes=train_set.num_classes,
                        class_names=train_set.class_names,
                        prior=_load_pretrained(config, train_set, device) if config.source == "fine_tune" else None,
                        vae=frozen_vae, native_size=config.native_size, checkpoint_dir=work.path, on_step=on_step)
    history["train_seconds"] = [time.perf_counter() - start]
    work.clear()  # finished: the artifact is the prior itself
    return prior, as_mlflow_history(history)


@torch.no_grad()
def score_prior(prior: PriorModel, test_set: TensorBundle, teacher_model: TensorBundle, params: dict[str, Any],
                device: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """VAE reconstruction PSNR on the test split, and class fidelity: the teacher's accuracy on samples."""
    from diffdistill.evaluation.saved import check_classifier_fits, classifier_from_bundle
    from diffdistill.prior import class_fidelity, reconstruction_psnr
    from diffdistill.prior.config import QualityConfig

    quality = build(QualityConfig, params.get("quality") if isinstance(params, dict) else None, "prior.quality")
    check_classifier_fits(teacher_model, test_set, "teacher_model (the class-fidelity judge)", "test_set")
    prior = prior.to(device)
    images = to_signed(to_unit(test_set["images"][: quality.max_test_images]))
    psnr = reconstruction_psnr(prior, images)
    judge = classifier_from_bundle(teacher_model, device)
    fidelity = class_fidelity(prior, judge, num_per_class=quality.samples_per_class,
                              guidance=quality.guidance, num_steps=quality.num_steps,
                              generator=torch.Generator().manual_seed(quality.seed))
    report = {"reconstruction_psnr_db": psnr, "class_fidelity": fidelity["accuracy"],
              "class_fidelity_per_class": fidelity["per_class"],
              "guidance": quality.guidance if quality.guidance is not None else prior.default_guidance,
              "num_steps": quality.num_steps, "judge": teacher_model.meta.get("arch"),
              "judge_test_accuracy": teacher_model.meta.get("test_accuracy"),
              "prior_fingerprint": module_fingerprint(prior)}
    logger.info("prior quality: PSNR %.2f dB, class fidelity %.1f%% at guidance %s", psnr,
                100 * fidelity["accuracy"], report["guidance"])
    return report, as_mlflow_metrics({"reconstruction_psnr_db": psnr, "class_fidelity": fidelity["accuracy"]})
