"""The GPU variant of the DALI graph is *defined* on every machine (no CUDA needed): DALI checks operator names and
arguments at definition time, so CI catches a wrong argument of the mixed decoder or a GPU operator even though it
cannot build or run the pipeline (the `gpu`-marked test in test_loader.py does that where CUDA exists)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("nvidia.dali")

from fastfashion.data.shard import ShardConfig, write_shards  # noqa: E402
from fastfashion.loading.augment import AugmentConfig  # noqa: E402
from fastfashion.loading.backends.dali_graph import RandomParams, fashion_pipeline  # noqa: E402


@pytest.fixture(scope="module")
def shard(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("gpugraph") / "shards"
    m = write_shards(tiny_dataset, out, ShardConfig(workers=1))
    s = m["splits"]["train"]["shards"][0]
    return str(out / s["tar"]), str(out / s["idx"])


@pytest.mark.parametrize("mode,fp16,cache_mb", [("train", False, 64), ("train", True, 0), ("eval", False, 64)])
def test_gpu_graph_is_defined(shard, mode, fp16, cache_mb):
    from nvidia.dali.pipeline import Pipeline
    cfg = AugmentConfig(image_size=64, mode=mode, fp16=fp16)
    rp = RandomParams(cfg, seed=0, batch_size=4, plan=[(0, np.arange(40))]) if mode == "train" else None
    pipe = fashion_pipeline(paths=[shard[0]], index_paths=[shard[1]], cfg=cfg, batch_size=4, device_id=0,
                            num_threads=1, seed=0, cache_mb=cache_mb, size_hint=(300, 300), random_params=rp)
    assert isinstance(pipe, Pipeline)


def test_unknown_argument_is_caught_at_definition(shard):
    """The premise of this file: DALI rejects a bad argument before build, without a GPU."""
    from nvidia.dali import fn, pipeline_def

    @pipeline_def(batch_size=2, num_threads=1, device_id=0)
    def bad():
        jpg = fn.readers.webdataset(paths=[shard[0]], index_paths=[shard[1]], ext=["jpg"])
        return fn.decoders.image(jpg, device="mixed", not_an_argument=1)

    with pytest.raises(KeyError, match=r'Argument "not_an_argument" is not defined for operator "decoders__Image"\.'):
        bad()
