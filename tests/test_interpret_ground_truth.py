"""Planted ground truth: each interpretability tool must recover the answer planted in its problem (the checks of
neuronb.interpret.planted, which also build the table in nbs/interpret/07_ground_truth). A tool that stops recovering
its answer fails here with the row that says what it recovered."""
import logging

import pytest

from neuronb.interpret import planted

logging.getLogger('lightning').setLevel(logging.ERROR)


def assert_rows_pass(rows):
    failed = [f"{r['tool']}: should recover {r['should_recover']}, recovered {r['recovered']}" for r in rows if not r['passed']]
    assert not failed, '\n'.join(failed)


def test_selectivity_and_mutual_information_find_the_planted_units():
    rows = planted.check_selectivity(seed=0)
    assert_rows_pass(rows)
    assert [r['value'] for r in rows[:2]] == [1.0, 1.0]  # precision and recall of both are exact on this problem


def test_participation_ratio_and_cka():
    rows = planted.check_geometry(seed=3)
    assert_rows_pass(rows)


@pytest.mark.parametrize('layer, head, position', [(1, 2, 3), (0, 3, 5)])
def test_patching_finds_the_wired_head_and_position(layer, head, position):
    rows = planted.check_patching(seed=1, wired_layer=layer, wired_head=head, signal_position=position)
    assert_rows_pass(rows)
    assert rows[0]['recovered'].startswith(f'blocks.{layer}.attn.head{head}:')


@pytest.mark.slow  # nbs/interpret/07_ground_truth.ipynb asserts the same rows in every CI run
def test_sae_recovers_features_in_superposition_and_beats_pca():
    rows = planted.check_sae(seed=0)
    assert_rows_pass(rows)


@pytest.mark.slow  # nbs/interpret/07_ground_truth.ipynb asserts the same rows in every CI run
def test_attributions_complete_and_on_the_planted_region():
    rows = planted.check_attribution(seed=0)
    assert_rows_pass(rows)
