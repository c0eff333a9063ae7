"""The model contract of the package.

(a) the import graph: no track imports another track, and the lower layers import no track (read from the source
    with `ast`, so a lazy import inside a function counts too);
(b) every model and encoder in a registry builds by name and runs forward on the `meta` device (shapes without
    compute) and, device-parametrised, on the CPU and on CUDA when present, attention maps included;
(c) one constructor vocabulary: no public constructor takes the old names.
"""
import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest
import torch
from torch import nn

import neuronb

PACKAGE_DIR = Path(neuronb.__file__).parent
TRACKS = {'lfp', 'temporal', 'encoding', 'video', 'eeg', 'neurofm'}
LOWER_LAYERS = ['core', 'data', 'nn', 'train']  # bottom up: each may import only those before it (and itself)


# --- (a) the import graph --------------------------------------------------------------------------------------------
def _unit(module: str) -> str:
    "The layer or track a dotted module of the package belongs to: 'neuronb.lfp.models' -> 'lfp'."
    parts = module.split('.')
    return parts[1] if len(parts) > 1 else ''


def _imported_modules(source: str, module: str, is_package: bool) -> list[tuple[str, int]]:
    "Every `neuronb.*` module that `source` (the module `module`) imports, with its line, relative imports resolved."
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split('.') if is_package else module.split('.')[:-1]
                base = base[:len(base) - (node.level - 1)]
                target = '.'.join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ''
            found.append((target, node.lineno))
            # `from neuronb import lfp` imports the track itself
            found += [(f'{target}.{alias.name}', node.lineno) for alias in node.names]
    return [(name, line) for name, line in found if name == 'neuronb' or name.startswith('neuronb.')]


def import_violations(sources: dict[str, tuple[str, bool]]) -> list[str]:
    "Broken layering rules in {module: (source, is_package)}: a track importing another track, a lower layer a track."
    violations = []
    for module, (source, is_package) in sorted(sources.items()):
        unit = _unit(module)
        seen = set()
        for target, line in _imported_modules(source, module, is_package):
            other = _unit(target)
            if not other or other == unit or (line, other) in seen: continue
            seen.add((line, other))
            if unit in TRACKS and other in TRACKS:
                violations.append(f"{module}:{line} imports {target}: track {unit!r} imports track {other!r}")
            elif unit in LOWER_LAYERS and other in TRACKS:
                violations.append(f"{module}:{line} imports {target}: lower layer {unit!r} imports track {other!r}")
            elif unit in LOWER_LAYERS and other in LOWER_LAYERS and LOWER_LAYERS.index(other) > LOWER_LAYERS.index(unit):
                violations.append(f"{module}:{line} imports {target}: layer {unit!r} imports the higher layer {other!r}")
    return violations


def _package_sources() -> dict[str, tuple[str, bool]]:
    sources = {}
    for path in sorted(PACKAGE_DIR.rglob('*.py')):
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix('').parts
        is_package = parts[-1] == '__init__'
        module = '.'.join(parts[:-1] if is_package else parts)
        sources[module] = (path.read_text(encoding='utf-8'), is_package)
    return sources


def test_no_track_imports_another_and_lower_layers_import_no_track():
    sources = _package_sources()
    assert {'neuronb.lfp.models', 'neuronb.encoding.models', 'neuronb.nn.attention'} <= set(sources)
    violations = import_violations(sources)
    assert not violations, 'import rules broken:\n' + '\n'.join(violations)


def test_the_import_check_catches_violations():
    "The checker itself: each kind of violation in a made-up package is found, allowed imports are not."
    made_up = {
        'neuronb.encoding.models': ('from ..temporal.encoders import make_encoder\nfrom ..nn.temporal import ENCODERS\n', False),
        'neuronb.video': ('def f():\n    import neuronb.lfp.models\n', True),
        'neuronb.nn.attention': ('from neuronb import lfp\nfrom .registry import Registry\n', False),
        'neuronb.data': ('from .train import fit\nfrom .core import to_fs\n', False),
        'neuronb.lfp.models': ('from neuronb.nn.attention import Block\nfrom .data import preprocess\n', False),
    }
    violations = import_violations(made_up)
    assert len(violations) == 4, violations
    assert any("neuronb.encoding.models:1 imports neuronb.temporal.encoders: track 'encoding' imports track 'temporal'" == v for v in violations)
    assert any(v.startswith('neuronb.video:2') for v in violations)
    assert any("lower layer 'nn' imports track 'lfp'" in v for v in violations)
    assert any("layer 'data' imports the higher layer 'train'" in v for v in violations)


# --- (b) every registered model builds and runs ----------------------------------------------------------------------
def _all_modules():
    "Every importable module of the package (importing the tracks fills the registries)."
    modules = []
    for info in pkgutil.walk_packages([str(PACKAGE_DIR)], prefix='neuronb.'):
        if info.name.endswith('_modidx'): continue
        modules.append(importlib.import_module(info.name))
    return modules


def _registries():
    from neuronb.nn.registry import Registry
    found = {}
    for module in _all_modules():
        for value in vars(module).values():
            if isinstance(value, Registry): found[value.kind] = value
    return found


# Small options and an input shape for each registered builder; a new model or registry must add its entry here.
EXAMPLES = {
    ('LFP model', 'vit3d'): (dict(n_trials=3, n_freqs=10, n_frames=9, patch=(4, 3), d_model=16, depth=2, n_heads=2), (2, 3, 10, 9)),
    ('LFP model', 'vit3d/divided'): (dict(n_trials=3, n_freqs=10, n_frames=9, patch=(4, 3), d_model=16, depth=2, n_heads=2,
                                          attention='divided'), (2, 3, 10, 9)),
    ('LFP model', 'vit2d'): (dict(n_freqs=10, n_frames=9, patch=(4, 3), d_model=16, depth=2, n_heads=2), (2, 10, 9)),
    ('temporal encoder', 'mean'): (dict(n_features=16, n_frames=32), (2, 32, 16)),
    ('temporal encoder', 'mean_posenc'): (dict(n_features=16, n_frames=32, d_model=24), (2, 32, 16)),
    ('temporal encoder', 'multiscale'): (dict(n_features=16, n_frames=32, d_model=24), (2, 32, 16)),
    ('temporal encoder', 'hierarchical'): (dict(n_features=16, n_frames=32, d_model=24), (2, 32, 16)),
    ('temporal encoder', 'transformer'): (dict(n_features=16, n_frames=32, d_model=24, d_hidden=16, n_heads=2), (2, 32, 16)),
    ('temporal encoder', 's3d'): (dict(n_features=3 * 32 * 32, n_frames=8, frame_size=(32, 32), d_model=16), (2, 8, 3 * 32 * 32)),
}

CASES = sorted(EXAMPLES)


def _self_described():
    "(kind, name) of registered builders without an EXAMPLES entry: they follow the model-table convention instead."
    covered = {(kind, name.split('/')[0]) for kind, name in EXAMPLES}
    return sorted((kind, name) for kind, reg in _registries().items() for name in reg.names() if (kind, name) not in covered)


def test_every_registered_builder_has_an_example():
    "Each builder has small options here, or builds from its defaults and describes its own input (`example_input`)."
    registries = _registries()
    assert {'LFP model', 'temporal encoder'} <= set(registries)
    missing = []
    for kind, name in _self_described():
        model = registries[kind].build(name)  # tiny by convention
        if not callable(getattr(model, 'example_input', None)): missing.append((kind, name))
    assert not missing, f"add EXAMPLES entries, or an example_input(batch_size) method, for {missing}"


def _tensors(value):
    "The tensors in a model's output (a tensor, a tuple or list, a dict or a dataclass of them)."
    import dataclasses
    if isinstance(value, torch.Tensor): return [value]
    if dataclasses.is_dataclass(value): value = [getattr(value, f.name) for f in dataclasses.fields(value)]
    if isinstance(value, dict): value = list(value.values())
    if isinstance(value, (tuple, list)): return [t for v in value for t in _tensors(v)]
    return []


@pytest.mark.parametrize('device', ['cpu', pytest.param('cuda', marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason='no CUDA device here'))])
@pytest.mark.parametrize('case', _self_described(), ids=lambda c: '/'.join(c) if isinstance(c, tuple) else c)
def test_self_described_builders_run_their_example_forward_and_backward(case, device):
    "Built from defaults, fed their own `example_input` on the device: finite outputs there, gradients for every trained parameter used."
    kind, name = case
    torch.manual_seed(0)
    model = _registries()[kind].build(name).to(device).train()
    example = model.example_input(batch_size=2)
    example = tuple(x.to(device) if isinstance(x, torch.Tensor) else x for x in example) if isinstance(example, tuple) \
        else (example.to(device) if isinstance(example, torch.Tensor) else example)
    out = model(*example) if isinstance(example, tuple) else model(example)
    tensors = [t for t in _tensors(out) if t.is_floating_point()]
    assert tensors, f"{kind} {name!r} returned no floating-point tensor"
    assert all(t.device.type == device and torch.isfinite(t).all() for t in tensors)
    if any(p.requires_grad for p in model.parameters()) and any(t.requires_grad for t in tensors):
        sum(t.float().pow(2).mean() for t in tensors if t.requires_grad).backward()
        assert any(p.grad is not None for p in model.parameters() if p.requires_grad)


def _build(kind, name):
    options, shape = EXAMPLES[(kind, name)]
    return _registries()[kind].build(name.split('/')[0], **options), shape


def _check_output(kind, model, out, shape):
    if kind == 'LFP model': assert out.shape == (shape[0], model.n_outputs)
    else: assert out.shape == (shape[0], model.d_model)


@pytest.mark.parametrize('case', CASES, ids=['/'.join(c) for c in CASES])
def test_builds_and_runs_on_meta(case):
    kind, name = case
    torch.manual_seed(0)
    with torch.device('meta'):
        model, shape = _build(kind, name)
    x = torch.empty(shape, device='meta')
    out = model.eval()(x)
    assert out.device.type == 'meta'
    _check_output(kind, model, out, shape)
    if hasattr(model, 'attention_maps'):
        maps = model.attention_maps(x)
        assert maps.device.type == 'meta' and maps.shape == (shape[0], model.n_trials, *model.grid)


DEVICES = ['cpu', pytest.param('cuda', marks=pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device here'))]


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('case', [c for c in CASES if c[1] != 's3d'] + [('temporal encoder', 's3d')],
                         ids=['/'.join(c) for c in CASES if c[1] != 's3d'] + ['temporal encoder/s3d'])
def test_forward_backward_and_attention_maps_on_device(case, device):
    kind, name = case
    torch.manual_seed(0)
    model, shape = _build(kind, name)
    model = model.to(device)
    x = torch.randn(shape, device=device)
    out = model.train()(x)
    _check_output(kind, model, out, shape)
    assert out.device.type == device and torch.isfinite(out).all()
    if any(p.requires_grad for p in model.parameters()):
        out.float().pow(2).mean().backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    if hasattr(model, 'attention_maps'):
        # the experiment's case: a model on the device, inputs from a CPU loader
        for method in ('cls', 'rollout'):
            maps = model.attention_maps(x.cpu(), method)
            assert maps.device.type == 'cpu' and maps.shape == (shape[0], model.n_trials, *model.grid)
            assert torch.allclose(maps.sum((1, 2, 3)), torch.ones(shape[0]), atol=1e-5)
        assert model.training  # attention_maps restores the mode it found


@pytest.mark.parametrize('device', DEVICES)
def test_lfp_model_evaluates_through_train_then_draws_maps(device):
    "After `neuronb.train.predict` on the device, attention maps of CPU inputs work (they failed on CUDA before)."
    from neuronb.data import ArrayDataset, make_loader
    from neuronb.train import TaskModule, predict
    model, shape = _build('LFP model', 'vit3d/divided')
    x = torch.randn(6, *shape[1:])
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    loader = make_loader(ArrayDataset(x.numpy(), y.numpy(), torch.arange(6).numpy()), batch_size=3, shuffle=False)
    module = TaskModule(model, task='binary', n_outputs=2)
    out = predict(module, loader, accelerator=device)['output']
    assert out.shape == (6, 2)
    maps = model.to(device).attention_maps(x)
    assert maps.device.type == 'cpu' and torch.isfinite(maps).all()


def test_model_records_the_options_it_ran_with():
    from neuronb.lfp.models import MODELS
    vit2d = MODELS.build('vit2d', d_model=16, depth=1, n_heads=2)
    assert vit2d.config['attention'] == 'joint' and vit2d.config['n_trials'] == 1 and vit2d.config['d_model'] == 16
    with pytest.raises(ValueError, match=r"does not take option\(s\) \['attention'\]; it takes \[.*'layerscale_init'.*\]"):
        MODELS.build('vit2d', attention='divided')
    vit3d = MODELS.build('vit3d', attention='divided', depth=1, d_model=16, n_heads=2)
    assert vit3d.config['attention'] == 'divided'


# --- (c) one constructor vocabulary ----------------------------------------------------------------------------------
OLD_NAMES = {'embed_dim', 'd_embed', 'drop_rate', 'init_values', 'drop_path_rate'}


def _public_constructors():
    for module in _all_modules():
        for name, value in vars(module).items():
            if name.startswith('_') or not inspect.isclass(value) or not value.__module__.startswith('neuronb'): continue
            if value.__module__ != module.__name__: continue  # count each class where it is defined
            yield f'{value.__module__}.{name}', value


def test_constructor_vocabulary():
    checked, offenders = 0, []
    for qualname, cls in _public_constructors():
        try: params = inspect.signature(cls.__init__).parameters
        except (TypeError, ValueError): continue
        checked += 1
        old = sorted(OLD_NAMES & set(params))
        if old: offenders.append(f'{qualname}: {old}')
    assert checked > 20, checked
    assert not offenders, 'constructors with the old names (use d_model, dropout, drop_path, layerscale_init):\n' + '\n'.join(offenders)
