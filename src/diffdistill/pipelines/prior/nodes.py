"""Nodes of the `prior` pipeline."""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from diffdistill.data.bundle import TensorBundle, to_signed, to_unit
from diffdistill.pipelines.common import (
    as_mlflow_history,
    as_mlflow_metrics,
    check_classifier_fits,
    check_params,
    classifier_from_bundle,
)
from diffdistill.prior import (
    LatentPrior,
    PriorTrainConfig,
    class_fidelity,
    imagenet_class_ids,
    load_components,
    load_dit_folder,
    reconstruction_psnr,
    train_prior,
)
from diffdistill.workdir import WorkDir, module_fingerprint, split_fingerprint

logger = logging.getLogger(__name__)
SOURCES = ("train", "fine_tune", "dit_folder", "components")


def _class_ids(params: dict[str, Any], num_classes: int) -> list[int] | None:
    if params.get("class_ids") is not None:
        return [int(i) for i in params["class_ids"]]
    if params.get("imagenet_subset"):
        return imagenet_class_ids(params["imagenet_subset"])
    return None


def _load_pretrained(params: dict[str, Any], train_set: TensorBundle, device: str) -> LatentPrior:
    source = params["source"]
    ids = _class_ids(params, train_set.num_classes)
    # A pretrained prior serves the data at the data's resolution (resized to and from its native size).
    data_size = int(train_set["images"].shape[-1])
    if source == "dit_folder" or (source == "fine_tune" and params.get("dit_folder")):
        check_params(params, "prior", {"dit_folder": str})
        prior = load_dit_folder(params["dit_folder"], class_ids=ids, class_names=train_set.class_names,
                                device=device, data_size=data_size)
    else:
        check_params(params, "prior", {"components": dict})
        parts = params["components"]
        check_params(parts, "prior.components", {"vae": str, "denoiser": str}, {"scheduler": (str, None)})
        prior = load_components(parts["vae"], parts["denoiser"], parts.get("scheduler"), class_ids=ids,
                                class_names=train_set.class_names, device=device, data_size=data_size)
    images = train_set["images"]
    prior.check_dataset(num_classes=train_set.num_classes, image_size=int(images.shape[-1]),
                        channels=int(images.shape[1]))
    return prior


def build_prior(train_set: TensorBundle, params: dict[str, Any], device: str) -> tuple[LatentPrior, dict[str, Any]]:
    """Train the prior here (`train`), continue a local one (`fine_tune`), or load a local folder as is."""
    source = params.get("source")
    if source not in SOURCES:
        raise ValueError(f"prior.source={source!r} is unknown; choose one of {', '.join(SOURCES)}")
    if source in ("dit_folder", "components"):
        return _load_pretrained(params, train_set, device), {}
    config = PriorTrainConfig.from_dict({**params.get("train", {}), "mode": "train" if source == "train" else
                                         "fine_tune", "device": device})
    images = to_signed(to_unit(train_set["images"]))
    labels = train_set["labels"]
    checkpoints = WorkDir.keyed("prior", config.to_dict(), split_fingerprint(train_set)).path
    history: dict[str, list[float]] = {}

    def on_step(step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            history.setdefault(key.replace("/", "_"), []).append(value)
        logger.info("prior step %d: %s", step, ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))

    start = time.perf_counter()
    prior = train_prior(images, labels, config, num_classes=train_set.num_classes,
                        class_names=train_set.class_names,
                        prior=_load_pretrained(params, train_set, device) if source == "fine_tune" else None,
                        checkpoint_dir=checkpoints, on_step=on_step)
    history["train_seconds"] = [time.perf_counter() - start]
    WorkDir(checkpoints).clear()  # finished: the artifact is the prior itself
    return prior, as_mlflow_history(history)


@torch.no_grad()
def score_prior(prior: LatentPrior, test_set: TensorBundle, teacher_model: TensorBundle, params: dict[str, Any],
                device: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """VAE reconstruction PSNR on the test split, and class fidelity: the teacher's accuracy on samples."""
    check_params(params, "prior", {"quality": dict})
    quality = params["quality"]
    check_params(quality, "prior.quality", {"max_test_images": int, "samples_per_class": int, "num_steps": int,
                                            "seed": int}, {"guidance": (float, None)})
    check_classifier_fits(teacher_model, test_set, "teacher_model (the class-fidelity judge)", "test_set")
    prior = prior.to(device)
    images = to_signed(to_unit(test_set["images"][: int(quality["max_test_images"])]))
    psnr = reconstruction_psnr(prior, images)
    judge = classifier_from_bundle(teacher_model, device)
    fidelity = class_fidelity(prior, judge, num_per_class=int(quality["samples_per_class"]),
                              guidance=quality.get("guidance"), num_steps=int(quality["num_steps"]),
                              generator=torch.Generator().manual_seed(int(quality["seed"])))
    report = {"reconstruction_psnr_db": psnr, "class_fidelity": fidelity["accuracy"],
              "class_fidelity_per_class": fidelity["per_class"],
              "guidance": quality.get("guidance") if quality.get("guidance") is not None else prior.default_guidance,
              "num_steps": int(quality["num_steps"]), "judge": teacher_model.meta.get("arch"),
              "judge_test_accuracy": teacher_model.meta.get("test_accuracy"),
              "prior_fingerprint": module_fingerprint(prior)}
    logger.info("prior quality: PSNR %.2f dB, class fidelity %.1f%% at guidance %s", psnr,
                100 * fidelity["accuracy"], report["guidance"])
    return report, as_mlflow_metrics({"reconstruction_psnr_db": psnr, "class_fidelity": fidelity["accuracy"]})
