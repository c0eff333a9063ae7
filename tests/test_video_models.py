"""neuronb.video.backbones and neuronb.video.models: token contracts, bad input, the registry, parameter budget,
fusion behaviour and the evaluation helpers."""
import copy

import numpy as np
import pytest
import torch
from torchvision.models.video import r3d_18

from neuronb.nn.registry import n_params
from neuronb.video.backbones import MotionBackbone, SemanticBackbone, dense_temporal, file_sha256
from neuronb.video.models import (FULL_SIZE, MODELS, VideoFusion, VideoObjective, expected_calibration_error,
                                  fit_temperature, largest_confusions, topk_accuracy)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_full_configuration_under_20m_trainable_parameters():
    with torch.device('meta'):
        full = MODELS.build('cross_fusion', **FULL_SIZE)
        full_width = MODELS.build('cross_fusion', **{**FULL_SIZE, 'd_bottleneck': None})
    assert 5e6 < n_params(full) < 20e6
    assert n_params(full_width) > 3 * n_params(full)  # the bottleneck is what keeps it small


@pytest.mark.parametrize('name', MODELS.names())
def test_every_builder_builds_a_tiny_model(name):
    model = MODELS.build(name)
    out = model(*model.example_input(3))
    assert out.shape == (3, 10) and torch.isfinite(out).all()
    assert n_params(model) < 300_000


def test_semantic_only_is_a_frame_bag_and_fusion_reads_order():
    torch.manual_seed(0)
    bag = MODELS.build('semantic_only').eval()
    fused = MODELS.build('cross_fusion').eval()
    semantic, motion = fused.example_input()
    shuffled = semantic[:, torch.randperm(semantic.shape[1])]
    with torch.no_grad():
        assert torch.allclose(bag(shuffled, motion), bag(semantic, motion), atol=1e-5)
        assert not torch.allclose(fused(semantic, motion.flip(1)), fused(semantic, motion), atol=1e-4)
        maps = fused.attention_maps(semantic, motion)
    assert len(maps) == 2 and maps[0].shape == (2, 8, 8, 16)
    assert torch.allclose(maps[-1].sum((-1, -2)), torch.ones(2, 8), atol=1e-5)


def test_concat_fusion_keeps_streams_apart():
    torch.manual_seed(0)
    model = MODELS.build('concat_fusion').eval()
    semantic, motion = model.example_input()
    with torch.no_grad():
        out = model.run(semantic, motion)
        other = model.run(semantic, torch.randn_like(motion))
    d_semantic = 96
    assert torch.allclose(out.embedding[:, :d_semantic], other.embedding[:, :d_semantic], atol=1e-6)
    assert not torch.allclose(out.embedding[:, d_semantic:], other.embedding[:, d_semantic:])


def test_graph_bias_changes_attention_and_can_be_switched_off():
    torch.manual_seed(0)
    with_graph = MODELS.build('cross_fusion', depth=1)
    torch.manual_seed(0)
    without = MODELS.build('cross_fusion', depth=1, graph=False)
    assert with_graph.spatial_bias is not None and without.spatial_bias is None and without.temporal_bias is None
    assert n_params(with_graph) - n_params(without) == 2 * 2 + 2  # spatial + similarity weights per head, temporal per head
    semantic, motion = with_graph.example_input()
    assert not torch.allclose(with_graph(semantic, motion), without(semantic, motion))


def test_gradient_checkpointing_same_gradients():
    torch.manual_seed(0)
    plain = VideoFusion()
    checkpointed = VideoFusion(grad_checkpointing=True)
    checkpointed.load_state_dict(plain.state_dict())
    semantic, motion = plain.example_input()
    for net in (plain, checkpointed): net(semantic, motion).square().sum().backward()
    for a, b in zip(plain.parameters(), checkpointed.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-5)


def test_bad_token_shapes_are_named():
    model = MODELS.build('cross_fusion')
    semantic, motion = model.example_input()
    with pytest.raises(ValueError, match=r'motion tokens must be \(batch, 8, 128\)'):
        model(semantic, motion[:, :4])
    with pytest.raises(ValueError, match='does not take'):
        MODELS.build('motion_only', d_semantic=768)


def test_dense_motion_tokens_reproduce_stock_layer4():
    torch.manual_seed(0)
    stock = MotionBackbone('r3d_tiny', n_frames=16, frame_size=32, dense=False)
    dense = MotionBackbone('r3d_tiny', n_frames=16, frame_size=32, dense=True, spatial_tokens=True)
    clip = torch.randn(2, 16, 3, 32, 32)
    stock_grid = stock.network.layer4(stock.network.layer3(stock.network.layer2(stock.network.layer1(stock.network.stem(clip.transpose(1, 2))))))
    dense_tokens = dense(clip)
    assert stock(clip).segments.shape == (2, 2, 128) and dense_tokens.segments.shape == (2, 8, 128)
    assert torch.allclose(dense_tokens.spatial[:, ::4], stock_grid.permute(0, 2, 3, 4, 1), atol=1e-5)
    assert dense.positions().tolist() == list(range(0, 16, 2))


def test_dense_temporal_on_r3d_18_keeps_weights():
    network = r3d_18(weights=None)
    before = copy.deepcopy(network.state_dict())
    dense_temporal(network)
    assert all(torch.equal(before[k], v) for k, v in network.state_dict().items())
    assert network.layer4[0].conv1[0].stride == (1, 2, 2) and network.layer4[1].conv2[0].dilation == (4, 1, 1)


def test_backbones_refuse_wrong_frames_and_sizes():
    semantic = SemanticBackbone('dinov3_tiny', n_frames=4, frame_size=32)
    motion = MotionBackbone('r3d_tiny', n_frames=16, frame_size=32)
    with pytest.raises(ValueError, match='n_frames=4'):
        semantic(torch.randn(1, 8, 3, 32, 32))
    with pytest.raises(ValueError, match='frame_size=32'):
        semantic(torch.randn(1, 4, 3, 48, 48))
    with pytest.raises(ValueError, match='n_frames=16'):
        motion(torch.randn(1, 12, 3, 32, 32))
    with pytest.raises(TypeError, match='float'):
        motion(torch.zeros(1, 16, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match='multiple of the 16-pixel patch'):
        SemanticBackbone('dinov3_tiny', frame_size=40)
    with pytest.raises(ValueError, match='unknown motion arch'):
        MotionBackbone('r2plus1d')


def test_frozen_backbones_stay_frozen():
    semantic = SemanticBackbone('dinov3_tiny', n_frames=2, frame_size=32).train()
    motion = MotionBackbone('r3d_tiny', n_frames=16, frame_size=32).train()
    for backbone in (semantic, motion):
        assert not backbone.training and all(not m.training for m in backbone.modules())
        assert n_params(backbone) == 0 and n_params(backbone, trainable_only=False) > 0


def test_checkpoints_load_name_parameters_and_change_identity(tmp_path):
    from safetensors.torch import save_file
    wrong = tmp_path / 'r3d_18.pt'
    torch.save(r3d_18(weights=None).state_dict(), wrong)
    with pytest.raises(ValueError, match=r'stem\.0\.weight.*r3d_18\.pt|r3d_18\.pt.*stem\.0\.weight'):
        MotionBackbone('r3d_tiny', checkpoint=wrong)
    vit_weights = tmp_path / 'vit.safetensors'
    source = SemanticBackbone('dinov3_tiny', n_frames=2, frame_size=32, init_seed=5)
    save_file({k: v.contiguous() for k, v in source.vit.state_dict().items()}, vit_weights)
    with pytest.raises(ValueError, match='patch_embed'):
        SemanticBackbone('vit_small_patch16_dinov3', checkpoint=vit_weights, n_frames=2, frame_size=32)
    loaded = SemanticBackbone('dinov3_tiny', checkpoint=vit_weights, n_frames=2, frame_size=32)
    clip = torch.randn(1, 2, 3, 32, 32)
    assert torch.equal(loaded(clip).patches, source(clip).patches)
    assert loaded.identity()['checkpoint'] == file_sha256(vit_weights) != source.identity()['checkpoint'] == 'random-init'
    assert source.identity() != SemanticBackbone('dinov3_tiny', n_frames=2, frame_size=32, init_seed=6).identity()
    partial = tmp_path / 'partial.pt'
    state = dict(source.vit.state_dict())
    state.pop('cls_token')
    torch.save(state, partial)
    with pytest.raises(ValueError, match='cls_token'):
        SemanticBackbone('dinov3_tiny', checkpoint=partial, n_frames=2, frame_size=32)
    report = SemanticBackbone('dinov3_tiny', checkpoint=partial, n_frames=2, frame_size=32, strict=False).load_report
    assert report.missing == ['cls_token']


def test_temperature_scaling_repairs_overconfidence():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6000, 6, generator=g)
    y = torch.randint(0, 6, (6000,), generator=g)
    logits[torch.arange(6000), y] += 1.5
    y = torch.multinomial(logits.softmax(-1), 1, generator=g)[:, 0]  # calibrated at temperature 1 by construction
    cold = 2.5 * logits
    temperature = fit_temperature(cold[:3000], y[:3000])
    assert 2.2 < temperature < 2.8
    before = expected_calibration_error(cold[3000:].softmax(-1), y[3000:])
    after = expected_calibration_error((cold[3000:] / temperature).softmax(-1), y[3000:])
    assert before > 0.1 and after < 0.03


def test_topk_and_largest_confusions():
    logits = torch.tensor([[5.0, 1, 0], [0, 5, 1], [5, 0, 1], [5, 1, 0]])
    y = torch.tensor([0, 1, 2, 2])
    assert topk_accuracy(logits, y, 1) == 0.5 and topk_accuracy(logits, y, 2) == 0.75 and topk_accuracy(logits, y, 3) == 1.0
    counts = np.zeros((3, 3), int)
    counts[2, 0] = 2
    counts[0, 0] = 1
    counts[1, 1] = 1
    table = largest_confusions(counts, ['a', 'b', 'c'])
    assert table.to_dict('records') == [dict(true='c', predicted='a', count=2, share_of_true=1.0)]


def test_objective_reads_both_token_sets():
    model = MODELS.build('cross_fusion', n_outputs=3)
    semantic, motion = model.example_input(4)
    objective = VideoObjective(3)
    batch = {'semantic': semantic, 'motion': motion, 'y': torch.tensor([0, 1, 2, 0])}
    metrics = objective.make_metrics()
    out = objective.step(model, batch, 'train', metrics)
    assert out.batch_size == 4 and torch.isfinite(out.losses['loss'])
    assert set(metrics.compute()) == {'accuracy', 'top5_accuracy', 'balanced_accuracy'}


def test_token_stats_make_the_model_invariant_to_channel_scale_and_offset():
    "Tokens rescaled and shifted per channel (as another frozen backbone's scale would) give the same logits once the statistics are fitted."
    torch.manual_seed(0)
    model = MODELS.build('cross_fusion').eval()
    semantic, motion = model.example_input(batch_size=16)
    scale_s, shift_s = torch.rand(96) * 0.02 + 1e-3, torch.randn(96) * 5
    scale_m, shift_m = torch.rand(128) * 0.02 + 1e-3, torch.randn(128)
    far_semantic, far_motion = semantic * scale_s + shift_s, motion * scale_m + shift_m
    with torch.no_grad():
        model.fit_token_stats(semantic, motion)
        reference = model(semantic, motion)
        model.fit_token_stats(far_semantic, far_motion)
        assert torch.allclose(model(far_semantic, far_motion), reference, atol=1e-3)
        model.fit_token_stats(semantic, motion)  # statistics of the other tokens: the far tokens now read differently
        assert (model(far_semantic, far_motion) - reference).abs().max() > 10 * (reference.std() * 1e-3)
    with pytest.raises(ValueError, match='semantic tokens must be'):
        model.fit_token_stats(semantic[..., :8], motion)
