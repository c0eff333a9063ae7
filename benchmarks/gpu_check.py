"""One-command GPU check: each track's GPU sweep spec, its models at the spec's sizes, a few bf16 training steps each.

    python benchmarks/gpu_check.py [papermill_runs/lfp_gpu.yaml ...] [--steps 5] [--batch-size N]

Per model (one line per distinct model and size among the spec's runs): parameters, batch, step time (forward,
backward and AdamW step under bf16 autocast), samples per second, model FLOPs per step (counted by
torch.utils.flop_counter on one step), model FLOPs utilisation against the device's dense bf16 peak, and peak
memory. Then the Mamba kernel-vs-scan parity where mamba-ssm is installed. On a machine without a CUDA device it
says so and exits 0: there is nothing to measure.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the models of each track's GPU spec: (module, registry attribute, parameters naming the model(s), default model)
TRACKS = {'lfp': ('neuronb.lfp.models', 'MODELS', ('model',), None),
          'eeg': ('neuronb.eeg.labram', 'MODELS', ('model',), 'labram'),
          'neurofm': ('neuronb.neurofm.model', 'MODELS', ('model',), 'neurofmx'),
          'video': ('neuronb.video.models', 'MODELS', ('model', 'ablations'), None),
          'temporal': ('neuronb.temporal.encoders', 'ENCODERS', ('encoder',), None)}
# dense bf16 tensor-core peak (TFLOP/s, no sparsity) by device name fragment, from the vendors' data sheets
PEAK_BF16_TFLOPS = {'H200': 989.0, 'H100 SXM': 989.0, 'H100 NVL': 835.0, 'H100 PCIe': 756.0, 'H100': 756.0,
                    'GH200': 989.0, 'B200': 2250.0, 'A100': 312.0, 'A800': 312.0, 'L40S': 362.0, 'L40': 181.0,
                    'L4': 121.0, 'A10G': 70.0, 'A10': 125.0, 'RTX 6000 Ada': 364.0, 'RTX 4090': 165.0, 'RTX 3090': 71.0}


def device_peak(name: str) -> float | None:
    "Dense bf16 peak FLOP/s of a CUDA device from its name; None when unknown."
    for fragment, tflops in sorted(PEAK_BF16_TFLOPS.items(), key=lambda kv: -len(kv[0])):
        if fragment.lower() in name.lower(): return tflops * 1e12
    return None


_DATA_OPTIONS = ('n_outputs', 'n_chans', 'n_times', 'sfreq', 'chs_info')  # follow the data: the builder's defaults

def _registry(track: str):
    module, attribute, _, _ = TRACKS[track]
    return getattr(importlib.import_module(module), attribute)


def spec_models(spec_path: Path) -> tuple[str, list[tuple[str, dict, int]]]:
    "(track, [(model name, builder options, batch size)]) for the distinct models of a GPU spec's runs."
    from neuronb.sweep import load_spec
    spec = load_spec(spec_path)
    track = spec.name.split('_')[0]
    if track not in TRACKS: return track, []
    registry = _registry(track)
    found, seen = [], set()
    for run in spec.runs:
        p = run.parameters
        names = []
        for key in TRACKS[track][2]:
            value = p.get(key)
            names += [v for v in (value if isinstance(value, list) else [value]) if isinstance(v, str) and v in registry]
        if not names and TRACKS[track][3]: names = [TRACKS[track][3]]
        for name in names:
            accepted = registry.options(name)
            options = {k: v for k, v in p.items() if k in accepted and k not in _DATA_OPTIONS}
            key = (name, repr(sorted(options.items())))
            if key in seen: continue
            seen.add(key)
            found.append((name, options, int(p.get('batch_size', 8))))
    return track, found


def _loss(out):
    import torch
    if isinstance(out, torch.Tensor): return out.float().mean()
    if isinstance(out, dict): out = list(out.values())
    if isinstance(out, (list, tuple)):
        return sum(_loss(o) for o in out if isinstance(o, (torch.Tensor, dict, list, tuple)))
    return getattr(out, 'loss', None) if hasattr(out, 'loss') else torch.zeros(())


def measure(model, batch_size: int, steps: int, peak: float | None) -> dict:
    "bf16 training steps of `model` on its example_input: step time, samples/s, FLOPs per step, MFU, peak memory."
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    model = model.cuda().train()
    sig = inspect.signature(model.example_input)
    x = model.example_input(batch_size) if 'batch_size' in sig.parameters else model.example_input()
    args = tuple(a.cuda() if isinstance(a, torch.Tensor) else a for a in (x if isinstance(x, tuple) else (x,)))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    def step():
        with torch.autocast('cuda', dtype=torch.bfloat16):
            loss = _loss(model(*args))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    for _ in range(2): step()  # warm-up: kernels chosen, memory allocated
    torch.cuda.synchronize()
    with FlopCounterMode(display=False) as counter: step()
    flops = counter.get_total_flops()
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps): step()
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / steps
    n = args[0].shape[0] if isinstance(args[0], torch.Tensor) else batch_size
    return dict(step_ms=dt * 1e3, samples_s=n / dt, gflop=flops / 1e9, mfu=(flops / dt / peak) if peak else None,
                peak_mem_gb=torch.cuda.max_memory_allocated() / 2**30, batch=n)


def mamba_parity() -> str:
    "Largest difference between the mamba-ssm kernel and the parallel scan on one Mamba block, or why not measured."
    import torch
    from neuronb.nn import mamba
    if mamba.mamba_ssm_kernel() is None: return 'mamba-ssm is not installed: kernel-vs-scan parity not measured'
    torch.manual_seed(0)
    block = mamba.Mamba(64, backend='cuda').cuda()
    x = torch.randn(2, 256, 64, device='cuda')
    with torch.no_grad():
        y_kernel = block(x)
        mamba.set_backend(block, 'parallel')
        y_scan = block(x)
    diff = (y_kernel - y_scan).abs().max().item()
    return f"Mamba kernel vs parallel scan (float32, L=256): max |diff| = {diff:.2e}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('specs', nargs='*', help='GPU sweep specs (default: papermill_runs/*_gpu.yaml)')
    parser.add_argument('--steps', type=int, default=5, help='timed steps per model (after 2 warm-up steps and 1 counted)')
    parser.add_argument('--batch-size', type=int, help="batch size (default: the spec's batch_size, else 8)")
    args = parser.parse_args(argv)
    specs = [Path(s) for s in args.specs] or sorted((ROOT / 'papermill_runs').glob('*_gpu.yaml'))
    import torch
    if not torch.cuda.is_available():
        print(f"no CUDA device on this machine (torch {torch.__version__}, CUDA build {torch.version.cuda}): the GPU "
              f"check has nothing to measure here.")
        print(f"On a GPU machine it would time {len(specs)} spec(s):")
        for spec_path in specs:
            track, models = spec_models(spec_path)
            shown = ', '.join(f"{m}({', '.join(f'{k}={v}' for k, v in o.items())}; batch {b})" for m, o, b in models)
            print(f"  {spec_path.name}: {shown or 'no registered model in its runs'}")
        return 0
    torch.backends.cuda.matmul.allow_tf32 = True
    name = torch.cuda.get_device_name()
    peak = device_peak(name)
    print(f"device: {name}, dense bf16 peak {peak / 1e12:.0f} TFLOP/s" if peak else f"device: {name} (peak unknown: no MFU)")
    print(f"{'spec':<18}{'model':<24}{'params':>10}{'batch':>7}{'step ms':>10}{'samples/s':>11}{'GFLOP':>10}{'MFU':>7}{'peak GB':>9}")
    failures = 0
    for spec_path in specs:
        track, models = spec_models(spec_path)
        if not models:
            print(f"{spec_path.stem:<18}(no registered model found in its runs)")
            continue
        registry = _registry(track)
        for model_name, options, batch in models:
            label = model_name + (f" d{options['d_model']}" if 'd_model' in options else '')
            try:
                model = registry.build(model_name, **options)
                if not hasattr(model, 'example_input'):
                    print(f"{spec_path.stem:<18}{label:<24}(no example_input method: not timed)")
                    continue
                n_params = sum(p.numel() for p in model.parameters())
                r = measure(model, args.batch_size or batch, args.steps, peak)
                mfu = f"{100 * r['mfu']:.1f}%" if r['mfu'] is not None else 'n/a'
                print(f"{spec_path.stem:<18}{label:<24}{n_params / 1e6:>9.2f}M{r['batch']:>7}{r['step_ms']:>10.1f}"
                      f"{r['samples_s']:>11.0f}{r['gflop']:>10.1f}{mfu:>7}{r['peak_mem_gb']:>9.2f}")
            except Exception as e:  # one model failing must not hide the others
                failures += 1
                print(f"{spec_path.stem:<18}{label:<24}FAILED: {type(e).__name__}: {' '.join(str(e).split())[:160]}")
            finally:
                torch.cuda.empty_cache()
    print(mamba_parity())
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
