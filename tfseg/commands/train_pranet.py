"""Train PraNet on a folder of images/ + masks/ (see README): tfseg.training.train_pranet."""

import argparse
import logging

from tfseg import cli
from tfseg.cli import add_flag as add


def parse_args(argv=None):
    from tfseg.models import BACKBONES  # TensorFlow: inside main, where Ctrl-C is handled
    from tfseg.training import PraNetConfig

    defaults = PraNetConfig(data_path="")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    cli.add_training_flags(p, defaults, "training folder with images/ and masks/")
    add(p, "val_path", help="separate validation folder with images/ and masks/")
    add(p, "split_file", help="text file of validation ids (file stems) taken out of --data_path")
    add(p, "backbone", default=defaults.backbone, choices=list(BACKBONES))
    add(
        p,
        "backbone_weights",
        default="imagenet",
        help="imagenet | none | PATH to a no-top weights file (res2net50: the ImageNet weights converted by "
        "convert_weights.py --model res2net50); unused with --init_weights (a whole PraNet's weights)",
    )
    add(p, "channels", type=int, default=defaults.channels)
    add(p, "input_size", "--inputsize", type=int, default=defaults.input_size, help="divisible by 32")
    add(p, "decay_rate", type=float, default=defaults.decay_rate)
    add(p, "decay_epoch", type=int, default=defaults.decay_epoch)
    add(p, "multiscale", action="store_true", help="train each batch at 0.75/1/1.25 x input size (original)")
    add(p, "augment", action="store_true", help="flips, rotation, scale/crop, colour jitter")
    add(
        p,
        "unweighted_bce",
        action="store_true",
        help="plain-mean BCE as the official code computes it (default: the paper's weighted BCE)",
    )
    return cli.check_training_args(p, p.parse_args(argv))


def train(args):
    from tfseg.training import PraNetConfig, resume_config, train_pranet

    if args.resume:
        config = resume_config(
            args.resume,
            epochs=args.epochs,
            strategy=args.strategy,
            export_dir=args.export_dir,
            export=not args.no_export,
        )  # the export is the end of a run, not a setting
    else:
        weights = None if args.backbone_weights.lower() == "none" else args.backbone_weights
        config = cli.config_from_args(
            PraNetConfig, args, backbone_weights=weights, weighted_bce=not args.unweighted_bce
        )
    result = train_pranet(config, resume=args.resume, progress=not args.quiet)
    logging.info("Run folder: %s  best val Dice: %.4f", result["run_dir"], result["best_dice"])
    for kind, path in result.get("export", {}).items():
        logging.info("%s: %s", "Preset" if kind == "preset" else f"Exported {kind}", path)


main = cli.command(parse_args, train, timestamps=True)
console = cli.console(main)
