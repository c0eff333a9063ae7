"""Shared pytest configuration.

`@pytest.mark.slow` marks a test that repeats, at a larger size, what a faster test or a notebook run by nbdev_test
already checks. Slow tests are skipped by default (CI runs the README's test command in a fixed budget on 2 cores);
run them with `pytest --run-slow` or `NEURONB_RUN_SLOW=1`.
"""
import os

import pytest


def pytest_addoption(parser):
    parser.addoption('--run-slow', action='store_true', default=False, help='also run tests marked slow')


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: a larger or repeated check; skipped unless --run-slow or NEURONB_RUN_SLOW=1')


def pytest_collection_modifyitems(config, items):
    if config.getoption('--run-slow') or os.environ.get('NEURONB_RUN_SLOW') == '1': return
    skip = pytest.mark.skip(reason='slow: run with --run-slow or NEURONB_RUN_SLOW=1')
    for item in items:
        if 'slow' in item.keywords: item.add_marker(skip)
