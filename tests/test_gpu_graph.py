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


@pytest.mark.parametrize("device_id", [0, None])
def test_roi_decode_with_the_decoder_cache_is_defined(shard, device_id):
    """A cropped decode cannot be cached: with roi_decode the cache's arguments are left out (decoders.image_crop
    rejects them at definition), on the GPU definition and the CPU one alike."""
    cfg = AugmentConfig(image_size=64, mode="train")
    rp = RandomParams(cfg, seed=0, batch_size=4, plan=[(0, np.arange(40))])
    fashion_pipeline(paths=[shard[0]], index_paths=[shard[1]], cfg=cfg, batch_size=4, device_id=device_id,
                     num_threads=1, seed=0, cache_mb=64, size_hint=(300, 300), random_params=rp, roi_decode=True,
                     channels_last=True, hw_decoder_load=0.9)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_channels_last_output_is_the_same_images_without_a_copy(shard, mode):
    """channels_last=True: DALI writes HWC, viewed as NCHW with channels_last strides (what the CUDA step wants), the
    same values as the CHW graph; run here on the CPU definition of the graph."""
    import torch
    from nvidia.dali.plugin.pytorch.torch_utils import to_torch_tensor

    from fastfashion.train.device import to_device
    cfg = AugmentConfig(image_size=32, mode=mode)
    out = {}
    for cl in (False, True):
        rp = RandomParams(cfg, seed=0, batch_size=4, plan=[(0, np.arange(40))]) if mode == "train" else None
        pipe = fashion_pipeline(paths=[shard[0]], index_paths=[shard[1]], cfg=cfg, batch_size=4, device_id=None,
                                num_threads=1, seed=0, random_params=rp, channels_last=cl)
        pipe.build()
        images, _ = pipe.run()
        x = to_torch_tensor(images.as_tensor(), copy=False).clone()
        out[cl] = x.permute(0, 3, 1, 2) if cl else x
    assert out[True].shape == out[False].shape == (4, 3, 32, 32)
    assert out[True].is_contiguous(memory_format=torch.channels_last) and torch.equal(out[True], out[False])
    from fastfashion.loading.base import Batch
    moved, _ = to_device(Batch(out[True], torch.zeros(4, 3, dtype=torch.int64)), torch.device("cpu"), True)
    assert moved.data_ptr() == out[True].data_ptr()  # already channels_last on the device: no copy
