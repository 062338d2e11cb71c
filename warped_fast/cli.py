"""``warped-fast``: command-line entry points."""

from __future__ import annotations

import argparse
import json
import logging
import sys


def _train(args) -> int:
    from .train import TrainConfig, Trainer

    over = {"steps": args.steps, "output_dir": args.output_dir, "task": args.task}
    cfg = (
        TrainConfig.from_file(args.config, **over)
        if args.config
        else TrainConfig(**{k: v for k, v in over.items() if v})
    )
    folder = Trainer(cfg, device=args.device).train()
    print(f"model written to {folder}")
    return 0


def _release(args) -> int:
    from .train.release import release_default_model

    card = release_default_model(args.task, args.run)
    print(json.dumps(card["eval"], indent=2))
    return 0


def _info(args) -> int:
    from . import backend_info

    print(json.dumps(backend_info(args.device), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="warped-fast", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train / fine-tune a UNet with GP noise")
    t.add_argument("--config", help="a .toml or .json TrainConfig file")
    t.add_argument("--task", choices=["inpaint", "sr"])
    t.add_argument("--steps", type=int)
    t.add_argument("--output-dir")
    t.add_argument("--device")
    t.set_defaults(fn=_train)

    r = sub.add_parser("release-model", help="export a training run as the shipped default model")
    r.add_argument("--task", choices=["inpaint", "sr"], required=True)
    r.add_argument("--run", required=True, help="the run's output_dir")
    r.set_defaults(fn=_release)

    i = sub.add_parser("info", help="available backends and which one each op uses")
    i.add_argument("--device", choices=["cpu", "cuda"])
    i.set_defaults(fn=_info)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
