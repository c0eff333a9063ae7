"""Capacity of TR embeddings on synthesised speech (espeak-ng) and the scores of the capacity chapter."""
import shutil

import numpy as np
import pytest

import neuronb.temporal.encoders  # noqa: F401  (registers the temporal encoders by name)
from neuronb.encoding.capacity import (clip_windows, pair_label, reconstruction_scores, sequence_scores, speech_run,
                                       synthesize_words, train_readout)

pytestmark = pytest.mark.skipif(shutil.which('espeak-ng') is None, reason='espeak-ng is not installed')


def test_scores_on_constructed_predictions():
    first, second = np.array([0, 1, 2, 3]), np.array([1, 0, 3, 2])
    assert pair_label(first, second, 4).tolist() == [0, 3, 8, 11]
    assert sequence_scores(pair_label(second, first, 4), first, second, 4) == {'sequence': 0.0, 'words': 1.0, 'order': 0.0}
    assert sequence_scores(pair_label(first, second, 4), first, second, 4) == {'sequence': 1.0, 'words': 1.0, 'order': 1.0}
    clip = [np.arange(60.0)[:, None] * np.ones((1, 2))]
    windows = clip_windows(clip, n_frames=4)
    flat = np.repeat(windows['test'].mean(1, keepdims=True), 4, axis=1)
    assert reconstruction_scores(flat, windows['test'])['r_detail'] == 0.0
    with pytest.raises(ValueError, match='clip 0 has 10 frames'): clip_windows([np.zeros((10, 2))], n_frames=4)


def test_word_order_decoded_above_chance_and_mean_pooling_at_chance(tmp_path):
    "Two words per TR in either order: a temporal encoder learns the order, the mean of the frames cannot."
    words = ['bat', 'moon']
    bank = synthesize_words(words, tmp_path, voices=('en+m1', 'en+f2'), pitches=(50,))
    runs = {split: speech_run(bank, words, n, tmp_path / f'{split}.wav', rate=10.0, n_mels=16, seed=i)
            for i, (split, n) in enumerate([('train', 64), ('val', 24), ('test', 48)])}
    data = {split: (run['stimulus'], pair_label(run['first'], run['second'], 2)) for split, run in runs.items()}
    assert np.bincount(data['train'][1]).tolist() == [32, 32], 'both orders equally often'
    assert runs['train']['stimulus'].shape == (64, 20, 16)
    test = runs['test']
    scores = {}
    for kind, options in [('multiscale', {'d_model': 16, 'd_hidden': 16, 'n_segments': 4}), ('mean', {})]:
        logits = train_readout(kind, data, n_outputs=2, encoder_options=options, max_epochs=8, lr=1e-2, seed=0)
        scores[kind] = sequence_scores(logits.argmax(1), test['first'], test['second'], 2)
    assert scores['multiscale']['order'] >= 0.8, scores  # 48 TRs: 0.8 is far above chance (0.5)
    assert scores['mean']['order'] <= 0.7, scores
