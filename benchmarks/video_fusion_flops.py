"""Compute of the bottleneck fusion against full-width fusion, counted by torch.utils.flop_counter.

At the full configuration (ViT-B/16 patch tokens: 8 frames x 14x14 x 768; dense R3D-18 motion tokens: 8 x 512; heads
8, MLP ratio 4) it counts the FLOPs of one forward pass, for one clip, of
  * the cross-attention step alone: the 256-d bottleneck (down-projections, both cross-attention blocks, up-projections)
    against cross-attention blocks at the streams' own widths (768-d semantic queries reading 512-d motion, and back);
  * one whole fusion layer (graph attention in each stream + cross-attention), bottleneck against full width;
  * the whole 3-layer model, and its trainable parameters.
Everything runs on the meta device (no memory, no arithmetic): the counts are exact and the script takes seconds.
The design target is a 50% reduction (ratio <= 0.5).

    .venv/bin/python benchmarks/video_fusion_flops.py
"""
import torch
from torch.utils.flop_counter import FlopCounterMode

from neuronb.nn.attention import CrossBlock
from neuronb.nn.registry import n_params
from neuronb.video.models import FULL_SIZE, MODELS, FusionLayer


def flops(fn) -> int:
    with FlopCounterMode(display=False) as counter: fn()
    return counter.get_total_flops()


def cross_step(d_semantic: int, d_motion: int, d_bottleneck: int | None, n_heads: int, mlp_ratio: float):
    "The cross-attention part of a fusion layer: (down-projections), both CrossBlocks, (up-projections)."
    d_s, d_m = d_bottleneck or d_semantic, d_bottleneck or d_motion
    parts = dict(semantic_reads_motion=CrossBlock(d_s, n_heads, mlp_ratio, d_context=d_m),
                 motion_reads_semantic=CrossBlock(d_m, n_heads, mlp_ratio, d_context=d_s))
    if d_bottleneck is not None:
        parts.update(down_s=torch.nn.Linear(d_semantic, d_s), down_m=torch.nn.Linear(d_motion, d_m),
                     up_s=torch.nn.Linear(d_s, d_semantic), up_m=torch.nn.Linear(d_m, d_motion))
    modules = torch.nn.ModuleDict(parts)
    def run(s, m):
        if d_bottleneck is not None: s, m = modules['down_s'](s), modules['down_m'](m)
        s_new = modules['semantic_reads_motion'](s, m)
        m_new = modules['motion_reads_semantic'](m, s)
        if d_bottleneck is not None: s_new, m_new = modules['up_s'](s_new), modules['up_m'](m_new)
        return s_new, m_new
    return modules, run


def main():
    size = FULL_SIZE
    n_tokens = size['n_frames'] * size['grid'] ** 2
    d_s, d_m, heads, ratio = size['d_semantic'], size['d_motion'], size['n_heads'], size['mlp_ratio']
    with torch.device('meta'):
        s_flat = torch.empty(1, n_tokens, d_s)
        s = torch.empty(1, size['n_frames'], size['grid'] ** 2, d_s)
        m = torch.empty(1, size['n_segments'], d_m)
        rows = []
        counts = {}
        for label, width in (('bottleneck 256', size['d_bottleneck']), ('full width', None)):
            modules, run = cross_step(d_s, d_m, width, heads, ratio)
            counts[('cross', label)] = (flops(lambda: run(s_flat, m)), n_params(modules))
            layer = FusionLayer(d_s, d_m, width, heads, ratio)
            counts[('layer', label)] = (flops(lambda: layer(s, m)), n_params(layer))
            model = MODELS.build('cross_fusion', **{**size, 'd_bottleneck': width})
            counts[('model', label)] = (flops(lambda: model(s, m)), n_params(model))
    print(f"one clip: {n_tokens} semantic tokens ({d_s}-d), {size['n_segments']} motion tokens ({d_m}-d), "
          f"{heads} heads, MLP ratio {ratio}")
    for part, what in (('cross', 'cross-attention step'), ('layer', 'one fusion layer'), ('model', f"whole model ({size['depth']} layers)")):
        (bottleneck, p_b), (full, p_f) = counts[(part, 'bottleneck 256')], counts[(part, 'full width')]
        print(f"{what:30s} bottleneck {bottleneck / 1e9:7.2f} GFLOPs ({p_b / 1e6:5.2f}M params) | full width "
              f"{full / 1e9:7.2f} GFLOPs ({p_f / 1e6:6.2f}M params) | ratio {bottleneck / full:.2f} "
              f"({100 * (1 - bottleneck / full):.0f}% fewer FLOPs; target 50%)")


if __name__ == '__main__':
    main()
