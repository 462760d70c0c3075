"""Convert an original PyTorch checkpoint to tfseg: PraNet-19.pth (--model pranet, PraNet on Res2Net-50), the
Res2Net-50 ImageNet weights res2net50_v1b_26w_4s-3cf99910.pth (--model res2net50, for PraNet's --backbone_weights)
or the HRNet ImageNet weights hrnetv2_w48_imagenet_pretrained.pth, hrnetv2_w18_imagenet_pretrained.pth,
hrnet_w18_small_model_v1.pth (--model hrnet_w48, hrnet_w18, hrnet_w18_small: the trunk of EAR-Net's --config w48,
w18, small, for train_earnet.py --backbone_weights). Needs torch (pip install .[torch]). Thin wrapper over
tfseg.convert.convert_checkpoint."""

import argparse

from tfseg import cli
from tfseg.cli import add_flag as add


def parse_args(argv=None):
    from tfseg.convert import MODELS  # TensorFlow: inside main, where Ctrl-C is handled

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("source", help="PyTorch state dict (.pth)")
    p.add_argument("destination", help="output: .weights.h5 (weights) or .keras (whole model)")
    add(p, "model", default="pranet", choices=MODELS, help="what the checkpoint holds")
    add(
        p,
        "allow_partial",
        action="store_true",
        help="convert what matches and log missing/unexpected keys and unfilled weights instead of failing",
    )
    cli.add_verbose_flag(p)
    return p.parse_args(argv)


def convert(args):
    from tfseg.convert import convert_checkpoint  # TensorFlow after the flags

    convert_checkpoint(args.source, args.destination, args.model, args.allow_partial)


main = cli.command(parse_args, convert)
console = cli.console(main)
