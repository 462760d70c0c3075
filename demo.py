#!/usr/bin/env python
"""`make demo`: synthetic polyps -> train PraNet-MobileNetV2 for a few minutes on the CPU -> export (SavedModel,
ONNX, TFLite, each checked) -> evaluate with the polyp protocol -> segment images and a synthetic video with the
fastest runtime -> where everything went. Runs offline (backbone from scratch); pass --backbone_weights imagenet
when online."""

import argparse
import os
import shutil

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfseg import cli  # noqa: E402
from tfseg.data.synthetic import write_polyp_dataset, write_polyp_video  # noqa: E402
from tfseg.evaluation import evaluate  # noqa: E402
from tfseg.evaluation.report import results_markdown  # noqa: E402

RUN_NAME = "pranet_mobilenetv2"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--output", default="demo_output")
    p.add_argument("--train_images", type=int, default=160)
    p.add_argument("--val_images", type=int, default=40)
    p.add_argument("--input_size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--steps_per_epoch", type=int, default=20)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3, help="higher than PraNet's 1e-4: the backbone starts from scratch")
    p.add_argument("--backbone_weights", default="none")
    cli.add_verbose_flag(p)
    return p.parse_args()


def main():
    # TensorFlow is imported here, not at the top: the evaluation's spawned workers import this module again
    # and need none of it
    import keras

    from tfseg.export import export_model
    from tfseg.inference import Predictor, predict_images, segment_video
    from tfseg.training import PraNetConfig, train_pranet

    args = parse_args()
    cli.setup_logging(args.verbose, timestamps=True)
    data = os.path.join(args.output, "data")
    train_dir = write_polyp_dataset(os.path.join(data, "train"), args.train_images, size=None, seed=0)
    val_dir = write_polyp_dataset(os.path.join(data, "val"), args.val_images, size=None, seed=1)
    shutil.rmtree(os.path.join(args.output, RUN_NAME), ignore_errors=True)  # the demo starts afresh each time
    weights = None if args.backbone_weights.lower() == "none" else args.backbone_weights
    result = train_pranet(
        PraNetConfig(
            data_path=str(train_dir),
            val_path=str(val_dir),
            backbone="mobilenetv2",
            backbone_weights=weights,
            input_size=args.input_size,
            batch_size=args.batch_size,
            epochs=args.epochs,
            lr=args.lr,
            steps_per_epoch=args.steps_per_epoch,
            augment=True,
            logdir=args.output,
            run_name=RUN_NAME,
        )
    )
    run = result["run_dir"]
    evaluation_dir = os.path.join(args.output, "evaluation")
    evaluation = evaluate(
        val_dir,
        evaluation_dir,
        predictor=Predictor.load(result["export"]["savedmodel"]),
        save_maps=os.path.join(evaluation_dir, "maps"),
    )
    export_dir = os.path.join(args.output, "export")
    exported = export_model(
        keras.models.load_model(result["export"]["keras"]),
        export_dir,
        ["savedmodel", "onnx", "tflite"],
        args.input_size,
    )
    predictor = Predictor.load(export_dir)  # the fastest runtime of the folder
    images = predict_images(
        predictor,
        os.path.join(val_dir, "images", "synth_000*.jpg"),
        os.path.join(args.output, "infer_image"),
        progress=False,
    )
    clip, _ = write_polyp_video(os.path.join(data, "clip.mp4"), frames=60, size=(288, 352))
    video = segment_video(predictor, clip, os.path.join(args.output, "infer_video", "overlay.mp4"))

    print("\n== tfseg demo: done")
    print(f"synthetic data     {train_dir} ({args.train_images} images), {val_dir} ({args.val_images})")
    print(f"run folder         {run}  (args.json, log.csv, checkpoints/, best.weights.h5)")
    print(
        "validation Dice    "
        + ", ".join(f"{r['val_dice']:.3f}" for r in result["history"])
        + f"  (best {result['best_dice']:.3f})"
    )
    print(f"SavedModel         {result['export']['savedmodel']}  (endpoints: serve, serve_uint8)")
    print(f"Keras model        {result['export']['keras']}")
    print(f"TensorBoard        tensorboard --logdir {os.path.join(run, 'tensorboard')}")
    print(
        f"evaluation         {evaluation_dir}  (results.json/.csv, per_image.csv, plots, maps/); the same as\n"
        f"                   python test_model.py --model {result['export']['savedmodel']} --data_path {val_dir}"
    )
    print(
        f"export             {export_dir}: "
        + ", ".join(f"{name} (max |logit diff| {r['max_abs_diff']:.1e})" for name, r in exported.items())
    )
    print(
        f"infer_image        {images['output']}  ({len(images['written'])} images: *_mask.png, *_prob.png, "
        f"*_overlay.png); as python infer_image.py --model {export_dir} --image IMAGES --output DIR"
    )
    print(
        f"infer_video        {video['output']}  ({video['frames_out']} frames, {video['runtime']}: model "
        f"{video['model_ms_mean']:.1f} ms/frame, end to end {video['e2e_fps']:.1f} FPS); as\n"
        f"                   python infer_video.py --model {export_dir} --video {clip} --report report.json"
    )
    print("\n" + results_markdown(evaluation["results"], "polyp", protocol=evaluation["protocol"]))
    print("(the demo evaluates on its validation images, which chose the checkpoint: see the protocol card in")
    print(f" {os.path.join(evaluation_dir, 'results.json')}; held-out test images give comparable numbers)")


if __name__ == "__main__":
    main()
