"""Session fixtures of the eval tests: two tiny random diffusers models and one real eval run."""
from __future__ import annotations

from pathlib import Path

import pytest

from photogenic.pipeline.core.config.training import EvalConfig

# Three categories, two prompts each: 6 prompts x 2 seeds = 12 pairs, 4 per category.
PROMPTS = """# test prompts
alpha\ta red fox asleep in the snow
alpha\ta heron in shallow water
beta\ta bowl of ramen with an egg
beta\ta slice of lemon tart
gamma\ta lighthouse in a storm
gamma\ta spiral staircase from below
"""
CATEGORIES = ("alpha", "beta", "gamma")
# Fixtures imported into several test modules are set up once per module by pytest; this memo
# makes the expensive ones (model building, generation) happen once per session.
_BUILT: dict[str, object] = {}


def _once(name: str, build):
    if name not in _BUILT:
        _BUILT[name] = build()
    return _BUILT[name]


def eval_config(**overrides) -> EvalConfig:
    settings = {"seeds": [0, 1], "steps": 2, "device": "cpu", "batch_size": 6}
    return EvalConfig(**{**settings, **overrides})


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(base, tuned, aesthetic head): random diffusers models from the trainer's builder, and a
    LAION-format head with random weights sized for the tiny-random CLIP (768-d)."""
    def build():
        import torch

        from photogenic.filters.aesthetic import build_head
        from photogenic.training.tiny import make_tiny_base

        torch.set_num_threads(1)
        root = tmp_path_factory.mktemp("eval-models")
        base = make_tiny_base(root / "base", seed=0)
        tuned = make_tiny_base(root / "tuned", seed=1)
        torch.manual_seed(0)
        head = root / "aesthetic-head.pth"
        torch.save(build_head(768).state_dict(), head)
        return base, tuned, head

    return _once("tiny_models", build)


@pytest.fixture(scope="session")
def prompts_file(tmp_path_factory) -> Path:
    def build():
        path = tmp_path_factory.mktemp("eval-prompts") / "prompts.tsv"
        path.write_text(PROMPTS)
        return path

    return _once("prompts_file", build)


@pytest.fixture(scope="session")
def eval_out(tiny_models, prompts_file, tmp_path_factory) -> Path:
    """A real eval of the tiny models: generated images, CLIP + aesthetic judges, tables."""
    from photogenic.training.eval import run_eval

    def build():
        base, tuned, head = tiny_models
        out = tmp_path_factory.mktemp("eval-run") / "eval"
        run_eval(base, tuned, out, prompts_file, eval_config(aesthetic_head=str(head)))
        return out

    return _once("eval_out", build)
