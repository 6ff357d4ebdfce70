"""A tiny T5 encoder pretrained on text: Imagen's frozen pretrained language model, in
miniature (docs/design.md §2).

The built-in demo's encoder ("tiny-t5-words-shapes") starts from the random
"tiny-random-t5-words-ordered" weights and is trained on captions of the shapes grammar
(every template, attribute and relation; imagen_jax.data.shapes_scene), drawn from a
corpus seed of their own, never the image dataset's, with a masked-language-model
objective (Devlin et al. 2019: 15% of the words chosen; of those 80% replaced by a mask
id, 10% by a random word, 10% kept; predict the chosen words) plus, at every position,
the previous and the next token from that position's output. Linear heads on the
encoder's output make the predictions and are dropped after; only the encoder is kept,
and frozen. T5's own objective is span corruption with a decoder; these need no decoder.

Why the neighbour heads: with the masked LM alone, a word's output learns to say which
word it is and forgets where it stands. A linear probe that reads from the output at a
color word whether it names the background fell from 98.5% (the random start) to 71.6%,
the base rate; with the neighbour heads it reads 100% (docs/experiments.md section 4).
The UNet needs exactly that: which color is the object's and which the background's.

`ensure_pretrained(folder)` runs it once (deterministic: same settings, same machine,
same bytes) and writes a Hugging Face T5 checkpoint directory there: config.json,
model.safetensors, the word-level tokenizer's files, and pretrain.json (settings and the
held-out masked-word accuracy) last, as the mark of completion. The encoder is then
loaded like any real T5: `load_text_encoder(<that directory>)`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from imagen_jax import storage
from imagen_jax.text.builtin import BUILTIN_ENCODERS, TINY_RANDOM_T5_WORDS_ORDERED, WORDS
from imagen_jax.text.config import T5EncoderConfig
from imagen_jax.text.t5 import T5Encoder
from imagen_jax.text.tokenizer import tokenize, word_tokenizer

log = logging.getLogger(__name__)

PRETRAINED_SHAPES_T5 = "tiny-t5-words-shapes"
DONE_FILE = "pretrain.json"
_FIRST_WORD_ID = 3  # after <pad>, </s>, <unk>


@dataclasses.dataclass(frozen=True)
class PretrainSettings:
    """The masked-LM run. `mask_id`: an id no word has (the vocabulary's last)."""

    init: str = TINY_RANDOM_T5_WORDS_ORDERED
    steps: int = 600
    batch_size: int = 32
    max_length: int = 24  # the demo's data.max_text_length
    peak_lr: float = 2e-3
    warmup_steps: int = 50
    weight_decay: float = 0.01
    mask_rate: float = 0.15
    neighbor_weight: float = 1.0  # the previous / next-token heads (0: the masked LM alone)
    corpus_seed: int = 1000  # shapes_scene seed of the captions (the demo's images use 0)
    corpus_size: int = 20_000
    heldout_size: int = 1_000
    seed: int = 0

    def __post_init__(self):
        if not 0 <= self.warmup_steps < self.steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be in [0, steps={self.steps}).")

    @property
    def config(self) -> T5EncoderConfig:
        return BUILTIN_ENCODERS[self.init].config

    @property
    def mask_id(self) -> int:
        return self.config.vocab_size - 1


def shapes_corpus(seed: int, size: int, split: str = "train") -> list[str]:
    """`size` captions of the shapes grammar (records 0..size-1 of dataset seed `seed`)."""
    from imagen_jax.data.shapes_scene import sample_scene

    return [sample_scene(seed, i, split).caption for i in range(size)]


def mask_words(key, ids, mask, *, rate: float, mask_id: int, num_words: int):
    """BERT's masking of token ids [B, L] int32 (mask [B, L] bool; </s> and <pad> never
    chosen): returns (inputs [B, L] int32, chosen [B, L] bool). Each sequence has at least
    one chosen word."""
    choose_key, kind_key, word_key = jax.random.split(key, 3)
    words = mask & (ids >= _FIRST_WORD_ID)
    scores = jnp.where(words, jax.random.uniform(choose_key, ids.shape), -1.0)
    chosen = words & (scores >= 1.0 - rate)
    first = jnp.argmax(scores, axis=1)  # the highest-scoring word: chosen if none else is
    chosen = chosen | (jax.nn.one_hot(first, ids.shape[1], dtype=bool) & words)
    kind = jax.random.uniform(kind_key, ids.shape)
    random_words = jax.random.randint(word_key, ids.shape, _FIRST_WORD_ID, _FIRST_WORD_ID + num_words)
    inputs = jnp.where(chosen & (kind < 0.8), mask_id, ids)
    inputs = jnp.where(chosen & (kind >= 0.8) & (kind < 0.9), random_words, inputs)
    return inputs.astype(jnp.int32), chosen


_HEADS = ("word", "previous", "next")


def init_train_params(settings: PretrainSettings) -> dict:
    """{"encoder": the start encoder's params, and per head in _HEADS {"kernel" [D, V], "bias" [V]}}."""
    from imagen_jax.text.encoder import builtin_params

    encoder = builtin_params(settings.init, np.float32)
    d, v = settings.config.d_model, settings.config.vocab_size
    params = {"encoder": jax.tree.map(jnp.asarray, encoder)}
    for i, head in enumerate(_HEADS):
        kernel = jax.random.normal(jax.random.fold_in(jax.random.key(settings.seed), i), (d, v)) * d**-0.5
        params[head] = {"kernel": kernel, "bias": jnp.zeros((v,))}
    return params


def pretrain_loss(params, ids, inputs, mask, chosen, config: T5EncoderConfig, neighbor_weight: float):
    """Masked LM: mean cross-entropy of the chosen words from their outputs, plus
    `neighbor_weight` x the mean cross-entropy of each word's previous and next token from its
    output (every non-padding position). Returns (loss, masked-word accuracy)."""
    hidden = T5Encoder(config).apply({"params": params["encoder"]}, inputs, mask)
    logits = {head: hidden @ params[head]["kernel"] + params[head]["bias"] for head in _HEADS}
    weight = chosen.astype(jnp.float32)
    count = jnp.maximum(weight.sum(), 1.0)
    word = (optax.softmax_cross_entropy_with_integer_labels(logits["word"], ids) * weight).sum() / count
    accuracy = ((jnp.argmax(logits["word"], -1) == ids) * weight).sum() / count
    loss = word
    if neighbor_weight:
        for head, shift in (("previous", 1), ("next", -1)):
            target = jnp.roll(ids, shift, axis=1)
            valid = (mask & jnp.roll(mask, shift, axis=1)).astype(jnp.float32)
            valid = valid.at[:, 0 if shift == 1 else -1].set(0.0)  # no wrap-around
            losses = optax.softmax_cross_entropy_with_integer_labels(logits[head], target)
            loss = loss + neighbor_weight * (losses * valid).sum() / jnp.maximum(valid.sum(), 1.0)
    return loss, accuracy


def pretrain(settings: PretrainSettings = PretrainSettings(), *, progress: bool | None = None) -> tuple[dict, dict]:
    """Runs the masked-LM pretraining; returns (encoder params, metrics {loss, heldout_accuracy,
    seconds, ...}). Deterministic for given settings on a given machine. progress: a bar
    (None: only on a terminal)."""
    from tqdm import tqdm

    config, neighbor = settings.config, settings.neighbor_weight
    tokenizer = word_tokenizer(WORDS)
    ids, mask = tokenize(tokenizer, shapes_corpus(settings.corpus_seed, settings.corpus_size), settings.max_length)
    heldout = tokenize(
        tokenizer, shapes_corpus(settings.corpus_seed, settings.heldout_size, "test"), settings.max_length
    )
    schedule = optax.warmup_cosine_decay_schedule(0.0, settings.peak_lr, settings.warmup_steps, settings.steps)
    optimizer = optax.adamw(schedule, weight_decay=settings.weight_decay)
    params = init_train_params(settings)
    opt_state = optimizer.init(params)
    masking = functools.partial(mask_words, rate=settings.mask_rate, mask_id=settings.mask_id, num_words=len(WORDS))

    @jax.jit
    def step(params, opt_state, key, batch_ids, batch_mask):
        inputs, chosen = masking(key, batch_ids, batch_mask)
        grad_fn = jax.value_and_grad(pretrain_loss, has_aux=True)
        (loss, accuracy), grads = grad_fn(params, batch_ids, inputs, batch_mask, chosen, config, neighbor)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, accuracy

    @jax.jit
    def evaluate(params, key, batch_ids, batch_mask):
        inputs, chosen = masking(key, batch_ids, batch_mask)
        return pretrain_loss(params, batch_ids, inputs, batch_mask, chosen, config, neighbor)

    root = jax.random.key(settings.seed)
    order_rng = np.random.default_rng(settings.seed)
    start = time.perf_counter()
    losses = []
    for i in tqdm(
        range(settings.steps), desc="pretraining the text encoder", disable=None if progress is None else not progress
    ):
        rows = order_rng.integers(0, len(ids), settings.batch_size)
        params, opt_state, loss, _ = step(params, opt_state, jax.random.fold_in(root, i), ids[rows], mask[rows])
        losses.append(loss)
    seconds = time.perf_counter() - start
    # The held-out masking key: past every training step's.
    heldout_loss, heldout_accuracy = evaluate(params, jax.random.fold_in(root, settings.steps), *heldout)
    window = max(1, settings.steps // 10)
    metrics = {
        "loss_first_tenth": float(np.mean(jax.device_get(losses[:window]))),
        "loss_last_tenth": float(np.mean(jax.device_get(losses[-window:]))),
        "heldout_loss": float(heldout_loss),
        "heldout_masked_word_accuracy": float(heldout_accuracy),
        "seconds": seconds,
    }
    return jax.device_get(params["encoder"]), metrics


def ensure_pretrained(
    folder: str, settings: PretrainSettings = PretrainSettings(), *, progress: bool | None = None
) -> str:
    """The pretrained encoder's Hugging Face checkpoint directory `folder` (local or gs://),
    pretrained and written there first if it is not complete (no pretrain.json) or was made
    with other settings. Returns `folder`."""
    from imagen_jax.text.hf_checkpoint import save_hf_checkpoint

    done = storage.path(folder) / DONE_FILE
    wanted = dataclasses.asdict(settings)
    if done.exists() and json.loads(done.read_text()).get("settings") == wanted:
        return folder
    log.info("Pretraining the text encoder %s on the shapes grammar (once; cached in %s)", PRETRAINED_SHAPES_T5, folder)
    params, metrics = pretrain(settings, progress=progress)
    save_hf_checkpoint(folder, params, settings.config)
    tokenizer = word_tokenizer(WORDS)
    if storage.is_remote(folder):
        import tempfile

        with tempfile.TemporaryDirectory(prefix="imagen_jax_tokenizer_") as local:
            tokenizer.save_pretrained(local)
            storage.upload_tree(local, folder)
    else:
        tokenizer.save_pretrained(str(folder))
    storage.write_text(storage.join(folder, DONE_FILE), json.dumps({"settings": wanted, "metrics": metrics}, indent=1))
    log.info(
        "Pretrained in %.0f s: held-out masked-word accuracy %.1f%%",
        metrics["seconds"],
        100 * metrics["heldout_masked_word_accuracy"],
    )
    return folder
