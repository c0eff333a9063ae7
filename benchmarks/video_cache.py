"""An epoch of fusion-model inputs from the feature cache vs recomputing the frozen backbones (target: >= 50x).

Writes a synthetic SSv2-layout dataset, builds one cache per stream (semantic tokens from 8 frames, motion tokens
from 16 frames, each with its own sampling and normalisation), then times one training epoch of inputs two ways:
(a) `JoinedFeatures` over the caches through a DataLoader (what the fusion model trains from), and (b) decoding
every clip twice (8 and 16 frames) and running both frozen backbones on it, which is what training without a cache
costs per epoch. Uses the track's backbones (`neuronb.video.backbones`: DINOv3-style ViT and R3D) when they are
importable, otherwise small random-init stand-ins (timm ViT, torchvision r3d_18). Prints the ratio; asserts nothing.

    .venv/bin/python benchmarks/video_cache.py [--per-class 2 --semantic dinov3_tiny --motion r3d_tiny --size 64]
    .venv/bin/python benchmarks/video_cache.py --semantic vit_small_patch16_dinov3 --motion r3d_18 --size 112  # slower
    .venv/bin/python benchmarks/video_cache.py --stand-ins --size 64  # timm ViT-S/16 + torchvision r3d_18
"""
import argparse
import shutil
import tempfile
import time

import torch
from torch.utils.data import DataLoader

from neuronb.video.cache import JoinedFeatures, build_cache
from neuronb.video.data import SSv2Dataset, make_loader
from neuronb.video.synthetic import make_synthetic_ssv2


def backbones(semantic_arch, motion_arch, size, stand_ins=False):
    "Extractors, identities and normalisations of the two random-init frozen backbones, by stream."
    if stand_ins: return fallback_backbones(size)
    try:
        from neuronb.video.backbones import MotionBackbone, SemanticBackbone
    except ImportError:
        return fallback_backbones(size)
    semantic = SemanticBackbone(semantic_arch, n_frames=8, frame_size=size)
    motion = MotionBackbone(motion_arch, n_frames=16, frame_size=size)
    return ({'semantic': lambda f: semantic(f).patches, 'motion': lambda f: motion(f).segments},
            {'semantic': semantic.identity(), 'motion': motion.identity()},
            {'semantic': (semantic.mean, semantic.std), 'motion': (motion.mean, motion.std)})


def fallback_backbones(size):
    "Small random-init timm ViT and torchvision r3d_18 (used when neuronb.video.backbones is absent)."
    import timm
    from torchvision.models.video import r3d_18
    torch.manual_seed(0)
    vit = timm.create_model('vit_small_patch16_224', pretrained=False, img_size=size, num_classes=0).eval()
    r3d = r3d_18(weights=None).eval()
    def semantic(frames):
        tokens = vit.forward_features(frames.flatten(0, 1))[:, vit.num_prefix_tokens:]
        return tokens.unflatten(0, frames.shape[:2])
    def motion(frames):
        x = r3d.layer4(r3d.layer3(r3d.layer2(r3d.layer1(r3d.stem(frames.transpose(1, 2))))))
        return x.mean((-2, -1)).transpose(1, 2)
    imagenet = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    kinetics = ((0.43216, 0.394666, 0.37645), (0.22803, 0.22145, 0.216989))
    return ({'semantic': semantic, 'motion': motion},
            {'semantic': {'backbone': 'timm vit_small_patch16_224', 'checkpoint': 'random-init', 'seed': 0},
             'motion': {'backbone': 'torchvision r3d_18', 'checkpoint': 'random-init', 'seed': 0}},
            {'semantic': imagenet, 'motion': kinetics})


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--per-class', type=int, default=2, help='training videos per class (10 classes)')
    parser.add_argument('--semantic', default='dinov3_tiny')
    parser.add_argument('--motion', default='r3d_tiny')
    parser.add_argument('--size', type=int, default=64, help='frame size of both backbones')
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--workers', type=int, default=1, help='decoding workers for both paths')
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--stand-ins', action='store_true', help='timm ViT-S + torchvision r3d_18 instead of the track backbones')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    extractors, identities, norms = backbones(args.semantic, args.motion, args.size, args.stand_ins)
    folder = tempfile.mkdtemp(prefix='video-cache-')
    try:
        root = make_synthetic_ssv2(f'{folder}/ssv2', n_train_per_class=args.per_class, n_val_per_class=1)
        datasets = {name: SSv2Dataset(root, 'train', n_frames={'semantic': 8, 'motion': 16}[name], size=args.size,
                                      mean=norms[name][0], std=norms[name][1]) for name in ('semantic', 'motion')}
        start = time.perf_counter()
        caches = [build_cache(f'{folder}/cache/{name}', datasets[name], lambda f, e=extractors[name], n=name: {n: e(f)},
                              identities[name], batch_size=args.batch, num_workers=args.workers)
                  for name in ('semantic', 'motion')]
        build_seconds = time.perf_counter() - start
        features = JoinedFeatures(caches)
        print(f'{len(features)} clips; token shapes {features.shapes()}; cache built in {build_seconds:.1f} s')

        start = time.perf_counter()
        n_cached = sum(len(y) for _, y in DataLoader(features, batch_size=args.batch, shuffle=True))
        cached_seconds = time.perf_counter() - start

        start = time.perf_counter()
        n_recomputed = 0
        with torch.inference_mode():
            loaders = [make_loader(datasets[name], batch_size=args.batch, num_workers=args.workers, shuffle=False)
                       for name in ('semantic', 'motion')]
            for (semantic_frames, y), (motion_frames, _) in zip(*loaders):
                extractors['semantic'](semantic_frames)
                extractors['motion'](motion_frames)
                n_recomputed += len(y)
        recomputed_seconds = time.perf_counter() - start
        assert n_cached == n_recomputed == len(features)
        print(f'epoch from the cache:        {cached_seconds * 1000:8.1f} ms ({n_cached / cached_seconds:8.0f} clips/s)')
        print(f'epoch recomputing backbones: {recomputed_seconds * 1000:8.1f} ms ({n_recomputed / recomputed_seconds:8.1f} clips/s)')
        print(f'ratio recompute / cache: {recomputed_seconds / cached_seconds:.0f}x (target >= 50x)')
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == '__main__':
    main()
