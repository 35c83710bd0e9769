"""`vivavoce train tokenizer|decoder|vocoder|lm|hearing --config FILE.yaml`: run (or resume) a training recipe."""

from __future__ import annotations

import argparse

KINDS = ("tokenizer", "decoder", "vocoder", "lm", "hearing")


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a codec part, the speech LM or its hearing encoder (resumes a killed "
                       "run in the same --out)")
    p.add_argument("kind", choices=KINDS)
    p.add_argument("--config", help="YAML config (see configs/codec/, configs/lm/); defaults otherwise")
    p.add_argument("--stage", type=int, choices=(1, 2), help="lm: training stage (overrides the config)")
    p.add_argument("--device", help="cpu or cuda (overrides the config)")
    p.add_argument("--steps", type=int, help="total steps (overrides the config)")
    p.add_argument("--max-minutes", type=float, help="stop after this much wall time, in all (overrides)")
    p.add_argument("--stop-by", type=float, metavar="UNIX_TIME",
                   help="stop and save by this time: the training time shrinks to what the set-up leaves")
    p.add_argument("--out", help="run directory (overrides loop.out_dir)")
    p.add_argument("--manifest", help="training manifest JSONL (overrides loop.manifest)")
    p.add_argument("--init-from", help="a new run starts from this checkpoint's weights (a resumed run ignores it)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vivavoce.config import load_yaml, to_dict
    from vivavoce.train.loop import train

    if args.kind == "lm":
        from vivavoce.train.lm_recipe import LMRecipe as recipe_cls
        from vivavoce.train.lm_recipe import LMTrainConfig as config_cls
    elif args.kind == "hearing":
        from vivavoce.train.hearing import HearingRecipe as recipe_cls
        from vivavoce.train.hearing import HearingTrainConfig as config_cls
    else:
        from vivavoce.train.codec_recipes import RECIPES

        config_cls, recipe_cls = RECIPES[args.kind]
    cfg = load_yaml(config_cls, args.config) if args.config else config_cls()
    if args.stage is not None:
        if args.kind != "lm":
            from vivavoce.errors import VivavoceError

            raise VivavoceError("--stage applies to `train lm` only")
        cfg.stage = args.stage
        cfg.model.train_shared = args.stage == 2
    if args.kind == "lm" and args.init_from is not None:
        # the LM loads its start weights while it is built: the cached phase's shared states depend on them
        cfg.init_from, args.init_from = args.init_from, None
    for name, value in (("device", args.device), ("steps", args.steps), ("max_minutes", args.max_minutes),
                        ("stop_by", args.stop_by),
                        ("out_dir", args.out), ("manifest", args.manifest), ("init_from", args.init_from)):  # fmt: skip
        if value is not None:
            setattr(cfg.loop, name, value)
    if cfg.loop.device.startswith("cuda"):
        import torch

        from vivavoce.errors import VivavoceError

        if not torch.cuda.is_available():
            raise VivavoceError("--device cuda: no CUDA GPU is available here")
    path = train(recipe_cls(cfg), cfg.loop, to_dict(cfg))
    print(f"checkpoint: {path}")
    return 0
