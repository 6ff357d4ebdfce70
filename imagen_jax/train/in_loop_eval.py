"""FID and CLIP score during training (the `eval` config section, imagen_jax.config.EVAL_DEFAULTS).

Every eval.every steps the EMA params sample the captions of the data split's first
eval.num_images examples (fixed: unshuffled; an SR stage is given their low-res images),
with the stage's `sampling` section and a fixed key, batch-sharded over the mesh. The
samples are scored by FID against eval.reference_images images of the dataset (statistics
computed once, saved beside it) and by CLIP score against their captions; logged as eval/fid
and eval/clip_score to TensorBoard and metrics.jsonl. Small sets give biased FID: compare
runs at the same num_images, not with the paper's FID-30K.
"""

from __future__ import annotations

import logging

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from imagen_jax.images import to_uint8
from imagen_jax.parallel.mesh import batch_axis_size
from imagen_jax.pipeline.stage_sampler import StageConfig, sample_stage

log = logging.getLogger(__name__)


def check_eval_config(config, mesh) -> None:
    """One clear error for an eval section that cannot run (before anything compiles)."""
    section = config.get("eval")
    if not section or not section.every:
        return
    if not (section.inception_weights or section.clip):
        raise ValueError(
            "eval.every is set but neither eval.inception_weights (FID) nor eval.clip (CLIP score) is; "
            "set one, or eval.every=0."
        )
    ways = batch_axis_size(mesh)
    if section.num_images < 2 or section.num_images % ways:
        raise ValueError(
            f"eval.num_images={section.num_images} must be >= 2 and a multiple of the {ways} devices "
            "the samples are split over."
        )


class TrainingEval:
    """The fixed evaluation inputs and networks of one run; called with the EMA params."""

    def __init__(self, config, encoder, cache_dir: str | None, mesh):
        from imagen_jax.eval.scoring import ClipScorer, FidScorer
        from imagen_jax.train.preview import first_examples

        section = config.eval
        self.every, self.mesh, self.seed = section.every, mesh, config.seed
        self.stage = StageConfig.from_config(config)
        self.inputs = first_examples(config, encoder, cache_dir, section.num_images, captions=True)
        self.captions = [str(c) for c in self.inputs["caption"]]
        self.fid = self.reference = self.clip = None
        if section.inception_weights:
            self.fid = FidScorer(section.inception_weights, batch_size=section.batch_size, mesh=mesh)
            self.reference, where = self.fid.reference(
                config.data.name,
                resolution=config.resolution,
                data_dir=config.data.data_dir or None,
                split=section.reference_split or config.data.split,
                max_images=section.reference_images or None,
                image_key=config.data.image_key,
                progress=False,
            )
            log.info("eval: FID reference statistics of %d images at %s", self.reference.count, where)
        if section.clip:
            self.clip = ClipScorer(section.clip, batch_size=section.batch_size, mesh=mesh)

    def due(self, step: int, total: int) -> bool:
        return bool(self.every) and (step % self.every == 0 or step == total)

    def samples(self, params) -> np.ndarray:
        """uint8 [num_images, S, S, 3] sampled with `params` (every process gets all)."""
        sharding = NamedSharding(self.mesh, PartitionSpec(self.mesh.axis_names))
        count = len(self.captions)

        def put(name):
            local = np.asarray(self.inputs[name])
            rows = _process_rows(count)
            return jax.make_array_from_process_local_data(sharding, local[rows], local.shape)

        images = sample_stage(
            params,
            put("text_embedding"),
            put("text_mask"),
            jax.random.fold_in(jax.random.key(self.seed), 2),
            config=self.stage,
            low_res=put("low_res") if "low_res" in self.inputs else None,
        )
        return to_uint8(multihost_utils.process_allgather(images, tiled=True))

    def __call__(self, params) -> dict:
        """{'fid': .., 'clip_score': ..} of samples of the fixed inputs with `params`."""
        images = list(self.samples(params))
        values = {}
        if self.fid is not None:
            values["fid"] = self.fid.score(images, self.reference, load=None, progress=False)["fid"]
        if self.clip is not None:
            values["clip_score"] = self.clip.score(images, self.captions, load=None, progress=False)["clip_score"]
        return values


def _process_rows(count: int) -> slice:
    block = count // jax.process_count()
    return slice(jax.process_index() * block, (jax.process_index() + 1) * block)
