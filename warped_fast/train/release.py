"""Export a trained run as a shipped default model: fp16 safetensors inside the package, held-out
scores, a sample grid and the model card."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..models.default import WEIGHTS_DIR, load_model
from ..models.residual import COND_RANGE, CONTRAST_FLOOR, CONTRAST_REF, CONTRAST_RING
from .checkpoint import recover_checkpoint
from .config import TrainConfig
from .evaluate import evaluate, paired_margin, scores_table
from .trainer import Trainer, machine_description, plot_loss, read_loss_log

DOCS = Path(__file__).resolve().parents[2] / "docs" / "models"
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
EVAL = {"size": 64, "steps": 20, "seed": 0, "per_image": 32, "draws": 8}


def release_default_model(task: str, run_dir: str | Path, dest: Path | None = None) -> dict:
    """Export ``run_dir``'s EMA weights (fp16) to ``warped_fast/models/weights/<task>``, evaluate them on
    the held-out crops, save a sample grid and the loss curve under docs/models, rewrite the model card,
    and return the card data. With ``dest``, the export, its card.json and the two pictures go to ``dest``
    only (the shipped models' card and docs are left alone)."""
    trainer = load_trained(run_dir)
    cfg = trainer.cfg
    if cfg.task != task:
        raise ValueError(f"run_dir: trained for {cfg.task!r}, not {task!r}")
    if trainer.parts is not None:  # its export is a pipeline folder, not a default model's UNet folder
        raise ValueError(
            f"run_dir: {run_dir} fine-tunes the pipeline folder {trainer.parts.root}; the default models are "
            "pixel-space UNets: export this run with Trainer.export (or train) and load it with from_pretrained"
        )
    shipped = dest is None
    dest = WEIGHTS_DIR / task if shipped else Path(dest)
    trainer.export(dest, dtype=torch.float16)
    model = load_model(dest)
    scores = evaluate(model, task, **EVAL)
    stages = training_stages(run_dir)
    card = {
        "task": task,
        "steps": sum(st["steps"] for st in stages),
        "train_seconds": round(sum(st["train_seconds"] for st in stages), 1),
        "stages": stages,
        "final_loss_mean_last_100": stages[-1]["final_loss_mean_last_100"],
        "hardware": sorted({h for st in stages for h in st["hardware"]}),
        "parameters": sum(p.numel() for p in model.unet.parameters()),
        "weights_mb": round(sum(f.stat().st_size for f in dest.glob("*.safetensors")) / 2**20, 2),
        "config": json.loads(cfg.to_json()),
        "eval": scores,
    }
    (dest / "card.json").write_text(json.dumps(card, indent=2))
    docs = DOCS if shipped else dest
    docs.mkdir(parents=True, exist_ok=True)
    plot_loss([Path(st["folder"]) / "loss.csv" for st in stages], docs / f"{task}_loss.png")
    sample_grid(model, task, docs / f"{task}_samples.png")
    if shipped:
        write_model_card()
    return card


def load_trained(run_dir: str | Path, device: str | torch.device = "cpu") -> Trainer:
    """A :class:`Trainer` holding the trained state of the run folder ``run_dir`` (wherever it lies now, not
    its recorded ``output_dir``); raises when it has no checkpoint or the one restored is untrained."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise FileNotFoundError(f"run_dir: {run_dir} is not a training run's folder (no config.json in it)")
    cfg = TrainConfig.from_file(run_dir / "config.json", progress=False)
    if not recover_checkpoint(run_dir / "checkpoint"):
        raise FileNotFoundError(f"run_dir: no checkpoint in {run_dir}")
    trainer = Trainer(cfg, device=device, run_dir=run_dir)
    if trainer.step == 0:
        raise ValueError(f"run_dir: the checkpoint in {run_dir} is at step 0 (untrained)")
    return trainer


def training_stages(run_dir: str | Path) -> list[dict]:
    """The run and the runs it was fine-tuned from, oldest first: a run whose ``pretrained`` is another
    run's exported ``model`` folder continues that run. Each stage: run (its recorded ``output_dir``),
    folder (where it was read: ``run_dir`` for the last stage), config file (the one in ``configs/`` with
    that ``output_dir``, if any), steps, batch size, resolution, training seconds and the mean loss of
    its last 100 steps."""
    stages, run = [], Path(run_dir)
    while True:
        cfg = TrainConfig.from_file(run / "config.json", progress=False)
        rows = read_loss_log(run / "loss.csv")  # step, loss, lr, seconds
        # "seconds" restarts at 0 in each training session (resume): add up the sessions.
        total, prev = 0.0, 0.0
        for r in rows:
            sec = float(r[3])
            if sec < prev:
                total += prev
            prev = sec
        src = [
            f for f in sorted(CONFIGS.glob("*.toml")) if TrainConfig.from_file(f).output_dir == cfg.output_dir
        ]
        stages.insert(0, {
            "run": cfg.output_dir,
            "folder": str(run),
            "config_file": f"configs/{src[0].name}" if src else None,
            "steps": int(rows[-1][0]) if rows else 0,
            "batch_size": cfg.batch_size,
            "resolution": cfg.resolution,
            "train_seconds": round(total + prev, 1),
            "final_loss_mean_last_100": sum(float(r[1]) for r in rows[-100:]) / max(1, len(rows[-100:])),
            "pretrained": cfg.pretrained,
            "hardware": _run_hardware(run),
        })  # fmt: skip
        parent = Path(cfg.pretrained).parent if cfg.pretrained else None
        if parent is None or not (parent / "config.json").exists() or not (parent / "loss.csv").exists():
            return stages
        run = parent


def _run_hardware(run: Path) -> list[str]:
    """The machines a run trained on (``hardware.json``, written by the trainer); runs from before that
    record trained on a CPU like this one."""
    f = run / "hardware.json"
    return json.loads(f.read_text()) if f.exists() else [machine_description("cpu")]


def sample_grid(model, task: str, png: Path, size: int = 64, n: int = 6) -> None:
    """Rows: degraded input, model sample, ground truth, on held-out crops."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..sampling.euler import sample_image
    from .data import heldout_crops
    from .evaluate import gp_noise_batch
    from .tasks import downsample, inpaint_inputs, random_masks, upsample

    x = heldout_crops(size, 4)[:n]
    g = torch.Generator().manual_seed(7)
    if task == "inpaint":
        m = random_masks(n, size, size, g, p_full=0.0)
        cond = torch.cat([m, inpaint_inputs(x, m)], 1)
        shown = inpaint_inputs(x, m)
    else:
        cond = upsample(downsample(x), (size, size))
        shown = torch.nn.functional.interpolate(downsample(x), size=(size, size), mode="nearest")
    with torch.no_grad():
        y = sample_image(model, gp_noise_batch(n, size, 3), model.sampling_schedule(20), cond)
    if task == "inpaint":
        y = x * (1 - m) + y * m
    fig, axes = plt.subplots(3, n, figsize=(1.6 * n, 5))
    for r, (label, imgs) in enumerate((("input", shown), ("sample", y), ("truth", x))):
        for c in range(n):
            ax = axes[r, c]
            ax.imshow(((imgs[c].clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label)
    fig.suptitle(f"default {task} model on held-out crops ({size}px, 20 Euler steps, GP noise)")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def _verdict(ev: dict) -> str:
    """Which baselines the model's best estimate beats on both PSNR and SSIM, with paired margins over
    the crops (mean +- 2 standard errors; "clearly" when both margins exceed 2 standard errors)."""
    models = {k: v for k, v in ev.items() if k.startswith("model")}
    best = max(models, key=lambda k: models[k]["psnr"])
    n = ev["_meta"]["crops"]
    beats, loses = [], []
    for k, v in ev.items():
        if k.startswith(("_", "model")):
            continue
        (dp, sp, wp), (ds, ss, ws) = (paired_margin(models[best], v, m) for m in ("psnr", "ssim"))
        clear = dp > 2 * sp and ds > 2 * ss
        text = (
            f"{k} ({dp:+.2f} +- {2 * sp:.2f} dB, better on {wp}/{n} crops; SSIM {ds:+.4f} +- "
            f"{2 * ss:.4f}, {ws}/{n}{'' if clear or not (dp > 0 and ds > 0) else '; within noise'})"
        )
        (beats if dp > 0 and ds > 0 else loses).append(text)
    out = f"Best model estimate: {best}. Beats on PSNR and SSIM: {'; '.join(beats) or 'none'}."
    if loses:
        out += f" Does **not** beat: {'; '.join(loses)} (more training is needed)."
    return out


def _commands(card: dict) -> str:
    stages = card["stages"]
    cmds = [
        f"`warped-fast train --config {st['config_file'] or st['run'] + '/config.json'}`" for st in stages
    ]
    cmds.append(f"`warped-fast release-model --task {card['task']} --run {stages[-1]['run']}`")
    return ", then ".join(cmds)


def _stages_text(card: dict) -> str:
    parts = []
    for i, st in enumerate(card["stages"]):
        pre = st.get("pretrained")
        if not pre:
            what = "from scratch"
        elif i:
            what = "fine-tuned from the stage before"
        else:
            what = f"fine-tuned from {pre}"
        parts.append(
            f"{st['steps']} steps of batch {st['batch_size']} at {st['resolution']} px {what} "
            f"({st['train_seconds'] / 60:.0f} min on {' / '.join(st['hardware'])})"
        )
    return "; ".join(parts)


def write_model_card() -> Path:
    """``weights/MODEL_CARD.md`` from each shipped model's ``card.json``."""
    parts = [
        "# warped_fast default models",
        "",
        "Small pixel-space UNets (diffusers `UNet2DModel`, v-prediction, DDPM linear schedule, Euler/Karras "
        "sampling) trained from scratch with **GP noise** (RFF, lengthscale 2/pi px, J = 3000 shared features) "
        "in place of white noise, as the method requires (method section 6). They exist so that the library "
        "does its job offline on a CPU; they are not SDXL-class models.",
        "",
        "Residual parametrization (`residual = true`, `warped_fast/models/residual.py`): the UNet models "
        "`k (x - base(cond))`, where the base is read off the conditioning: the bicubic upsampling of the x8 "
        "low-resolution frame (SR), or the known pixels with the hole filled by a classical fill "
        '(inpainting: push-pull averaging, or, in stages whose config sets `residual_fill = "harmonic"`, '
        "the harmonic interpolant of the hole's boundary, the solution of Laplace's equation; "
        "`warped_fast/models/hole_fill.py`), and `k = residual_scale` (about 1 / the residual's std, like a "
        "VAE's scaling factor). "
        "The diffusion, the GP noise, the sampler and the guidance are unchanged: "
        "`D(u, sigma) = base + D_k(k (u - base), k sigma) / k`; sampling runs the scheduler's sigmas divided by "
        "`k`, the range the network was trained on. The bases alone are listed among the "
        "baselines below, so the tables show what the network adds to them.",
        "",
        "Contrast normalization (stages whose config sets `residual_normalize = true`): the "
        f"gain is `k c_ref / c` per crop, with `c` the per-channel std of the known pixels within {CONTRAST_RING} "
        f"px of the hole (floor {CONTRAST_FLOOR}, `c_ref` = {CONTRAST_REF} in [-1, 1] units), and the network "
        f"sees the masked image as `(image - ring mean) / c`, softly limited to +-{COND_RANGE:g}. The fill is "
        "then equivariant to intensity "
        "scaling and shifts, and the loss weighs each crop's relative error alike, as a per-crop PSNR does: "
        "without it the network's absolute errors, tolerable in busy holes, cost flat holes several dB.",
        "",
        "Estimates: the ODE sample is one draw from the model (it invents detail, so its PSNR is below a "
        "posterior mean's); the one-step MMSE is `D(sigma_max xi)`; the mean of draws averages that over "
        f"{EVAL['draws']} GP draws `xi` (the same posterior mean, less of the network's sensitivity to its "
        "pure-noise input). Margins in the verdicts are paired over the held-out crops: mean difference +- "
        "2 standard errors, and on how many crops the model is better.",
        "",
        "Data: the photos that scikit-image (16 images and the motorcycle stereo pair), scikit-learn "
        "(`china.jpg`, `flower.jpg`) and matplotlib (`grace_hopper.jpg`) ship (`warped_fast/train/data.py`): "
        "random crops after random rescaling (`crop_scales` in the config: area downscaling, bicubic "
        "upscaling) and horizontal flips; held out entirely: `chelsea` and `flower.jpg`. Video clips are "
        "never used.",
        "",
    ]
    for task in ("inpaint", "sr"):
        f = WEIGHTS_DIR / task / "card.json"
        if not f.exists():
            continue
        c = json.loads(f.read_text())
        e = c["eval"]["_meta"]
        parts += [
            f"## {task}",
            "",
            f"- command: {_commands(c)}",
            f"- {c['parameters'] / 1e6:.2f} M parameters, {c['weights_mb']} MB (fp16 safetensors)",
            f"- training: {_stages_text(c)}; {c['train_seconds'] / 60:.0f} min in all",
            f"- final loss (mean of the last 100 steps): {c['final_loss_mean_last_100']:.4f}; "
            f"curve: `docs/models/{task}_loss.png`; samples: `docs/models/{task}_samples.png`",
            f"- held-out scores ({e['crops']} crops of {e['size']} px, {e['steps']} Euler steps, seed {e['seed']}):",
            "",
            scores_table(c["eval"]),
            "",
            _verdict(c["eval"]),
            "",
        ]
    out = WEIGHTS_DIR / "MODEL_CARD.md"
    out.write_text("\n".join(parts))
    return out
