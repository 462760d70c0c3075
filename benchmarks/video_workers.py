#!/usr/bin/env python
"""infer_video's end-to-end frame rate with one model worker and with two (tfseg.inference.video), each run a
fresh process, the two alternated round by round; prints a markdown table (frames per second, the model's time per
frame in a worker, process CPU seconds) and the ratio of the medians.

`--xnnpack_isa avx2` (or `avxvnni`) holds LiteRT's XNNPACK to the kernels of a CPU without AVX-512 (and without
AVX-VNNI): on an AVX-512 host, it measures the TFLite files as such a CPU's instructions run them (not its clock,
cores or caches). It clears those features in the cpuinfo flags inside LiteRT's library before XNNPACK reads
them, through the library's private symbols (`nm`) and cpuinfo's struct cpuinfo_x86_isa layout, checked against
/proc/cpuinfo first; ONNX Runtime and TensorFlow keep their own dispatch.

    python benchmarks/video_workers.py --model EXPORT --video CLIP --runtimes tflite_int8 onnx_int8 --rounds 3
    python benchmarks/video_workers.py --model EXPORT --video CLIP --runtimes tflite_int8 --xnnpack_isa avx2
"""

import argparse
import ctypes
import json
import os
import resource
import subprocess
import sys
import tempfile

import numpy as np

# cpuinfo's struct cpuinfo_x86_isa on x86-64 (include/cpuinfo.h), one bool each, up to the last field used here
CPUINFO_X86_ISA = (
    "rdtscp rdpid sysenter msr clzero clflush clflushopt mwait mwaitx fxsave xsave three_d_now three_d_now_plus "
    "prefetch prefetchw prefetchwt1 sse3 ssse3 sse4_1 sse4_2 sse4a misaligned_sse avx avxvnni fma3 fma4 xop f16c avx2 "
    "avx512f avx512pf avx512er avx512cd avx512dq avx512bw avx512vl avx512ifma avx512vbmi avx512vbmi2 avx512bitalg "
    "avx512vpopcntdq avx512vnni avx512bf16 avx512fp16"
).split()
# fields checked against /proc/cpuinfo before anything is changed: the layout must be the one above
PROC_FLAGS = {
    "ssse3": "ssse3",
    "avx": "avx",
    "fma3": "fma",
    "f16c": "f16c",
    "avx2": "avx2",
    "avxvnni": "avx_vnni",
    "avx512f": "avx512f",
    "avx512dq": "avx512dq",
    "avx512bw": "avx512bw",
    "avx512vl": "avx512vl",
    "avx512vnni": "avx512_vnni",
}
CLEARED = {
    "avxvnni": [name for name in CPUINFO_X86_ISA if name.startswith("avx512")],
    "avx2": [name for name in CPUINFO_X86_ISA if name.startswith("avx512")] + ["avxvnni"],
}


def hold_xnnpack_to(isa):
    """Clears the features of CLEARED[isa] where LiteRT's XNNPACK reads them; returns XNNPACK's arch flags after
    (its hardware config, initialised here). Call before any TFLite interpreter exists."""
    import ai_edge_litert.interpreter  # noqa: F401  (loads the library)

    library = os.path.join(os.path.dirname(sys.modules["ai_edge_litert"].__file__), "libpywrap_litert_common.so")
    wanted = ("cpuinfo_initialize", "cpuinfo_isa", "xnn_init_hardware_config")
    symbols = {}
    for line in subprocess.run(["nm", library], capture_output=True, text=True, check=True).stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] in wanted:
            symbols[parts[2]] = int(parts[0], 16)
    if set(symbols) != set(wanted):
        sys.exit(f"error: {library} lacks the symbols {sorted(set(wanted) - set(symbols))}: cannot hold XNNPACK")
    with open("/proc/self/maps") as f:
        mapping = next(line.split() for line in f if line.rstrip().endswith(os.path.basename(library)))
    base = int(mapping[0].split("-")[0], 16) - int(mapping[2], 16)
    if not ctypes.CFUNCTYPE(ctypes.c_bool)(base + symbols["cpuinfo_initialize"])():
        sys.exit("error: cpuinfo_initialize failed")
    flags = (ctypes.c_uint8 * len(CPUINFO_X86_ISA)).from_address(base + symbols["cpuinfo_isa"])
    with open("/proc/cpuinfo") as f:
        proc = set(next(line for line in f if line.startswith("flags")).split(":", 1)[1].split())
    for name, proc_name in PROC_FLAGS.items():
        if flags[CPUINFO_X86_ISA.index(name)] != (proc_name in proc):
            sys.exit(f"error: cpuinfo's {name} in {library} does not match /proc/cpuinfo: another struct layout")
    for name in CLEARED[isa]:
        flags[CPUINFO_X86_ISA.index(name)] = 0
    config = ctypes.CFUNCTYPE(ctypes.c_void_p)(base + symbols["xnn_init_hardware_config"])()
    return ctypes.c_uint64.from_address(config + 8).value  # struct xnn_hardware_config: arch_flags after 8 bytes


def child(args):
    arch_flags = hold_xnnpack_to(args.xnnpack_isa) if args.xnnpack_isa else None
    from tfseg.inference import Predictor, segment_video

    predictor = Predictor.load(args.model, runtime=args.runtime)
    report = segment_video(
        predictor, args.video, args.output, max_frames=args.max_frames, model_workers=args.model_workers
    )
    print(json.dumps({**report, "xnnpack_arch_flags": arch_flags}))


def run(args, runtime, workers, folder):
    command = [sys.executable, __file__, "--child", "--model", args.model, "--video", args.video]
    command += ["--runtime", runtime, "--model_workers", str(workers), "--output", os.path.join(folder, "o.mp4")]
    command += ["--max_frames", str(args.max_frames)] if args.max_frames else []
    command += ["--xnnpack_isa", args.xnnpack_isa] if args.xnnpack_isa else []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if result.returncode:
        sys.exit(f"error: {' '.join(command)} failed:\n{result.stderr[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    if report["frames_in"] != report["frames_out"]:
        sys.exit(f"error: {report['frames_in']} frames in, {report['frames_out']} out")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return report, cpu


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="an export folder")
    p.add_argument("--video", required=True)
    p.add_argument("--runtimes", nargs="+", default=["tflite_int8"])
    p.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--max_frames", type=int)
    p.add_argument("--xnnpack_isa", choices=sorted(CLEARED))
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--runtime", help=argparse.SUPPRESS)
    p.add_argument("--model_workers", type=int, help=argparse.SUPPRESS)
    p.add_argument("--output", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    if args.xnnpack_isa and any(not name.startswith("tflite") for name in args.runtimes):
        sys.exit("error: --xnnpack_isa holds the TFLite files' kernels only: give tflite runtimes")
    print(f"xnnpack kernels: {args.xnnpack_isa or 'the CPU own'}; load average before: {os.getloadavg()[0]:.2f}")
    print("| runtime | model workers | end-to-end FPS per round | model ms per frame (mean) | CPU s |")
    print("|---|---:|---|---|---|")
    fps = {}
    with tempfile.TemporaryDirectory() as folder:
        results = {(runtime, workers): [] for runtime in args.runtimes for workers in args.workers}
        for _ in range(args.rounds):
            for runtime in args.runtimes:
                for workers in args.workers:
                    results[runtime, workers].append(run(args, runtime, workers, folder))
    for (runtime, workers), runs in results.items():
        fps[runtime, workers] = float(np.median([report["e2e_fps"] for report, _ in runs]))
        rates = " / ".join(f"{report['e2e_fps']:.1f}" for report, _ in runs)
        model_ms = " / ".join(f"{report['model_ms_mean']:.1f}" for report, _ in runs)
        print(f"| {runtime} | {workers} | {rates} | {model_ms} | {' / '.join(f'{cpu:.1f}' for _, cpu in runs)} |")
    if args.xnnpack_isa:
        flags = {f"{report['xnnpack_arch_flags']:#x}" for runs in results.values() for report, _ in runs}
        print(f"XNNPACK's arch flags, held to {args.xnnpack_isa}: {', '.join(sorted(flags))}")
    for runtime in args.runtimes:
        for workers in args.workers[1:]:
            ratio = fps[runtime, workers] / fps[runtime, args.workers[0]]
            print(f"{runtime}: {workers} workers / {args.workers[0]}: {ratio:.2f}x (medians)")


if __name__ == "__main__":
    main()
