"""The models shipped inside the package, and loading of local diffusers folders (safetensors only).

``default_model("inpaint" | "sr")``: small pixel-space UNets trained with GP noise by
:mod:`warped_fast.train` on photos that scikit-image / scikit-learn ship; see ``weights/MODEL_CARD.md``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from ..io.frames import read_json
from ..ops._checks import check_device, check_float_dtype
from .denoiser import DiffusersDenoiser

WEIGHTS_DIR = Path(__file__).parent / "weights"
TASKS = ("inpaint", "sr")


def local_load_kwargs() -> dict:
    """Keyword arguments of diffusers' ``from_pretrained`` for a local folder: never download, safetensors
    only, and the low-memory loading path only where ``accelerate`` is installed (diffusers warns and
    falls back otherwise)."""
    from diffusers.utils import is_accelerate_available

    return {"use_safetensors": True, "local_files_only": True, "low_cpu_mem_usage": is_accelerate_available()}


def weights_variant(folder: str | Path, stem: str = "diffusion_pytorch_model") -> str | None:
    """The weights variant to load from ``folder``: None where ``{stem}.safetensors`` (or its shard index) is
    there, else the variant of ``{stem}.<variant>.safetensors`` files (e.g. "fp16", as a folder saved with
    ``variant="fp16"`` holds; "fp16" where there are several). ``stem``: "diffusion_pytorch_model" for a
    diffusers model, "model" for a transformers one."""
    folder = Path(folder)
    if (folder / f"{stem}.safetensors").exists() or (folder / f"{stem}.safetensors.index.json").exists():
        return None
    pattern = re.compile(rf"^{re.escape(stem)}\.(\w+?)(-\d+-of-\d+)?\.safetensors$")
    found = sorted({m.group(1) for p in folder.glob("*.safetensors") if (m := pattern.match(p.name))})
    if len(found) > 1 and "fp16" not in found:
        raise ValueError(f"folder: {folder} holds the weights variants {found}; keep one")
    return ("fp16" if "fp16" in found else found[0]) if found else None


def load_pretrained(cls, folder: str | Path, what: str, **kwargs):
    """``cls.from_pretrained(folder)`` (a diffusers model class) from a local folder (its weights variant, e.g.
    fp16, where it has only that: :func:`weights_variant`), refusing weights that
    do not fit the folder's ``config.json``: missing or differently shaped parameters would load as
    uninitialized memory (NaN output) with only a log line; extra ones are ignored, with a warning.
    ``what`` names the argument."""
    kwargs.setdefault("variant", weights_variant(folder))
    try:
        model, info = cls.from_pretrained(folder, output_loading_info=True, **local_load_kwargs(), **kwargs)
    except (RuntimeError, TypeError) as e:  # shapes the config does not give; keys the class does not take
        raise ValueError(f"{what}: cannot load {cls.__name__} from {folder} ({e})") from e

    def listed(key: str) -> str:
        names = [str(x[0]) if isinstance(x, tuple) else str(x) for x in (info.get(key) or [])]
        return ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")

    # extra tensors are ignored; missing or reshaped ones would be uninitialized memory
    bad = [
        f"{k.replace('_', ' ')}: {listed(k)}"
        for k in ("missing_keys", "mismatched_keys", "error_msgs")
        if listed(k)
    ]
    if bad:
        unexpected = f"; unexpected keys: {listed('unexpected_keys')}" if listed("unexpected_keys") else ""
        raise ValueError(
            f"{what}: the weights in {folder} do not fit its config.json ({'; '.join(bad)}{unexpected})"
        )
    if listed("unexpected_keys"):
        logging.getLogger("warped_fast").warning(
            "%s: %s holds weights %s does not use (ignored): %s",
            what,
            folder,
            cls.__name__,
            listed("unexpected_keys"),
        )
    return model


def schedule_family(sch_cfg: dict) -> str:
    """A diffusers scheduler config's family: "flow_matching" (FlowMatch*), "cosine" (Stable Audio's
    CosineDPMSolverMultistepScheduler: EDM's scalings, timestep atan(sigma) 2 / pi), "edm" (an EDM class or
    a ``sigma_data``: EDMEulerScheduler, EDMDPMSolverMultistepScheduler, ...) or "ddpm" (betas)."""
    name = sch_cfg.get("_class_name", "")
    if name.startswith("FlowMatch"):
        return "flow_matching"
    if name.startswith("Cosine"):
        return "cosine"
    return "edm" if name.startswith("EDM") or "sigma_data" in sch_cfg else "ddpm"


def load_unet_folder(
    folder: str | Path,
    device=None,
    dtype: torch.dtype = torch.float32,
    scheduler_dir: str | Path | None = None,
):
    """Load ``(unet, scheduler)`` from a local diffusers folder (``config.json`` + safetensors weights,
    ``scheduler_config.json``, or that file in ``scheduler_dir``). Never downloads; pickled weights are
    refused. The scheduler samples on Karras et al.'s sigma grid (the method's), unless its config names
    a sigma grid itself (Karras, exponential or beta). An EDM model's scheduler (an EDM class, or a
    ``sigma_data``) loads as ``EDMEulerScheduler``; flow-matching ones are refused (a FLUX Fill folder's
    transformer loads through :mod:`warped_fast.models.flux`)."""
    from diffusers import EDMEulerScheduler, EulerDiscreteScheduler, UNet2DConditionModel, UNet2DModel

    device, dtype = check_device("device", device), check_float_dtype("dtype", dtype)
    folder = Path(folder)
    cfg_path = folder / "config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"folder: no config.json in {folder} (expected a diffusers UNet folder)")
    if not any(folder.glob("*.safetensors")):
        raise FileNotFoundError(
            f"folder: no .safetensors weights in {folder} (pickled weights are not loaded)"
        )
    cls_name = read_json(cfg_path, "folder").get("_class_name", "UNet2DModel")
    cls = {"UNet2DModel": UNet2DModel, "UNet2DConditionModel": UNet2DConditionModel}.get(cls_name)
    if cls is None:
        raise ValueError(f"folder: unsupported model class {cls_name!r} in {cfg_path}")
    unet = load_pretrained(cls, folder, "folder", torch_dtype=dtype)
    sch_dirs = [Path(d) for d in (scheduler_dir, folder) if d is not None]
    sch_dir = next((d for d in sch_dirs if (d / "scheduler_config.json").exists()), None)
    if sch_dir is not None:
        sch_cfg = read_json(sch_dir / "scheduler_config.json", "scheduler")
        sch_cls, family = sch_cfg.get("_class_name", ""), schedule_family(sch_cfg)
        if family == "flow_matching":  # no noise levels sigma: as an Euler scheduler it would be wrong
            raise ValueError(
                f"scheduler: {sch_cls} in {sch_dir} is a flow-matching schedule; the sampler needs a "
                "DDPM-family (betas, e.g. EulerDiscreteScheduler) or an EDM model (e.g. EDMEulerScheduler)"
            )
        if family == "cosine":
            raise ValueError(
                f"scheduler: {sch_cls} in {sch_dir} conditions the model on atan(sigma) 2 / pi; the sampler "
                "takes DDPM-family schedules and EDM ones (timestep 0.25 log sigma, e.g. EDMEulerScheduler)"
            )
        # EDM: its preconditioning, its sigmas on an Euler grid
        edm = family == "edm"
        sch_type = EDMEulerScheduler if edm else EulerDiscreteScheduler
        scheduler = sch_type.from_config(sch_cfg)  # the config just read, not read again
        cfg = scheduler.config
        if not edm and not (
            cfg.get("use_karras_sigmas") or cfg.get("use_exponential_sigmas") or cfg.get("use_beta_sigmas")
        ):
            # the method samples on Karras et al.'s sigma grid (between the config's own end points)
            scheduler = EulerDiscreteScheduler.from_config(cfg, use_karras_sigmas=True)
    else:
        logging.getLogger("warped_fast").warning(
            "no scheduler_config.json in %s: using EulerDiscreteScheduler's defaults (linear betas "
            "1e-4..0.02); SD/SDXL models need their own (scaled_linear 0.00085..0.012): add a scheduler/ "
            "folder beside unet/",
            folder,
        )
        scheduler = EulerDiscreteScheduler(use_karras_sigmas=True)
    return unet.to(device or "cpu").eval(), scheduler


def load_model(
    folder: str | Path, device=None, dtype: torch.dtype = torch.float32, **denoiser_kwargs
) -> DiffusersDenoiser:
    """A :class:`DiffusersDenoiser` around the UNet of a local diffusers folder. A folder exported by
    :mod:`warped_fast.train` carries ``train_config.json``, whose residual options apply unless passed."""
    folder = Path(folder)
    # a diffusers model's unet/ folder: its scheduler sits beside it
    beside = folder.parent / "scheduler" if folder.name == "unet" else None
    unet, scheduler = load_unet_folder(folder, device, dtype, scheduler_dir=beside)
    return DiffusersDenoiser(unet, scheduler=scheduler, **trained_options(folder, denoiser_kwargs))


def train_config(folder: str | Path) -> dict:
    """A :mod:`warped_fast.train` export's ``train_config.json`` in ``folder`` ({} for other models)."""
    path = Path(folder) / "train_config.json"
    return read_json(path, "folder") if path.exists() else {}


def trained_options(folder: str | Path, denoiser_kwargs: dict) -> dict:
    """``denoiser_kwargs`` completed with the residual options (``residual``, ``residual_scale``,
    ``residual_normalize``, ``residual_fill``) a :mod:`warped_fast.train` export records in
    ``train_config.json`` (absent: a plain model)."""
    out = dict(denoiser_kwargs)
    tc = train_config(folder)
    if tc:
        out.setdefault("residual", bool(tc.get("residual", False)))
        out.setdefault("residual_scale", float(tc.get("residual_scale", 1.0)))
        out.setdefault("residual_normalize", bool(tc.get("residual_normalize", False)))
        out.setdefault("residual_fill", str(tc.get("residual_fill", "push_pull")))
    return out


def trained_noise(folder: str | Path) -> str:
    """The noise a model folder was trained with: ``train_config.json``'s ``noise`` (a
    :mod:`warped_fast.train` export: "gp" or "white"), else "white" (diffusion models are trained on white
    noise)."""
    return str(train_config(folder).get("noise", "white"))


def trained_lengthscale(folder: str | Path) -> float | None:
    """The GP lengthscale (pixels of the noise grid) a :mod:`warped_fast.train` export was trained with,
    from ``train_config.json``; None for a model trained on white noise or not trained here."""
    tc = train_config(folder)
    return float(tc["lengthscale"]) if tc.get("noise") == "gp" and "lengthscale" in tc else None


def default_model_dir(task: str) -> Path:
    if task not in TASKS:
        raise ValueError(f"task: expected one of {TASKS}, got {task!r}")
    d = WEIGHTS_DIR / task
    if not (d / "config.json").exists():
        raise FileNotFoundError(f"the default {task} model is not in this install ({d})")
    return d


def default_model(
    task: str = "inpaint", device=None, dtype: torch.dtype = torch.float32, **kw
) -> DiffusersDenoiser:
    """The shipped model for ``task`` ("inpaint" or "sr") as an x0-denoiser (weights stored in fp16,
    loaded in ``dtype``)."""
    return load_model(default_model_dir(task), device, dtype, **kw)
