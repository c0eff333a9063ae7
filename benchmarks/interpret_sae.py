"""SAE training at scale on the CPU: a TopK SAE trained through neuronb.train on 1M activation vectors with
planted sparse features in superposition; prints the training time and the metrics reached (L0, fraction of
variance explained, dead latents on held-out vectors, planted directions matched at cosine > 0.9, PCA's match).
    .venv/bin/python benchmarks/interpret_sae.py [--items 1000000] [--epochs 2] [--threads 2]"""
import argparse
import logging
import time

import torch
from sklearn.decomposition import PCA

from neuronb.interpret.planted import matched_fraction, planted_superposition
from neuronb.interpret.sae import sae_metrics, train_sae


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--items', type=int, default=1_000_000)
    parser.add_argument('--d-input', type=int, default=64)
    parser.add_argument('--features', type=int, default=256)
    parser.add_argument('--latents', type=int, default=512)
    parser.add_argument('--k', type=int, default=4)
    parser.add_argument('--epochs', type=int, default=2)
    parser.add_argument('--batch', type=int, default=4096)
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger('lightning').setLevel(logging.ERROR)
    n_held_out = 50_000
    data, directions = planted_superposition(n_items=args.items + n_held_out, d_input=args.d_input,
                                             n_features=args.features, p_active=4 / args.features, seed=0)
    wall, cpu = time.perf_counter(), time.process_time()
    sae = train_sae(data[:args.items], n_latents=args.latents, k=args.k, epochs=args.epochs, batch_size=args.batch, lr=4e-3)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    metrics = sae_metrics(sae, data[args.items:])
    sae_match = matched_fraction(sae.decoder.detach().numpy(), directions)
    pca_match = matched_fraction(PCA(args.d_input).fit(data[:200_000]).components_, directions)
    steps = args.epochs * -(-args.items // args.batch)
    print(f"{args.items} vectors of width {args.d_input}, {args.features} planted features; SAE {args.latents} latents, "
          f"k={args.k}, {args.epochs} epochs of batches of {args.batch} ({steps} steps), {args.threads} threads")
    print(f"training: {wall:.1f} s wall, {cpu:.1f} s CPU ({cpu / steps * 1000:.1f} ms CPU per step)")
    print(f"held-out: L0 {metrics['l0']:.2f}, variance explained {metrics['fraction_variance_explained']:.3f}, "
          f"dead latents {metrics['dead_fraction']:.3f}")
    print(f"planted directions matched at cosine > 0.9: SAE {sae_match:.3f}, PCA ({args.d_input} components) {pca_match:.3f}")


if __name__ == '__main__':
    main()
