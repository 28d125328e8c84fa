"""Every export test runs `datasets` offline, with its home and cache in a temp folder."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module", autouse=True)
def hf_offline(tmp_path_factory):
    """HF_DATASETS_OFFLINE=1 and HF_HOME / HF_DATASETS_CACHE under a temp folder, so nothing is
    written to the user's ~/.cache; yields the datasets cache folder (for `cache_dir=`)."""
    mp = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp("hf_home")
    for name, value in {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(home),
                        "HF_DATASETS_CACHE": str(home / "datasets")}.items():
        mp.setenv(name, value)
    import datasets

    # `datasets` reads these when it is imported, which may have been before this fixture.
    mp.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    mp.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    mp.setattr(datasets.config, "HF_DATASETS_CACHE", home / "datasets", raising=False)
    yield home / "datasets"
    mp.undo()
