"""The Flax T5 encoder without torch: masking, loading errors, logical axes, freezing, sharding."""

import functools
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from imagen_jax.text import (
    LOGICAL_AXES,
    T5Encoder,
    T5EncoderConfig,
    TextEncoder,
    encode_tokens,
    init_params,
    load_hf_checkpoint,
    load_text_encoder,
    save_hf_checkpoint,
)
from imagen_jax.text.t5 import abstract_params

CONFIG = T5EncoderConfig(
    vocab_size=64, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
    relative_attention_num_buckets=8, relative_attention_max_distance=16, feed_forward_proj="gated-gelu",
)  # fmt: skip


@pytest.fixture(scope="module")
def params():
    return init_params(CONFIG, seed=0)


@pytest.fixture()
def checkpoint(tmp_path, params):
    save_hf_checkpoint(str(tmp_path), params, CONFIG)
    return tmp_path


def test_padding_does_not_change_unmasked_outputs(params):
    """Same 10 tokens, padded to 12 or 40 with arbitrary (non-pad) ids: identical unmasked outputs."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(2, CONFIG.vocab_size, size=(1, 10))
    outputs = []
    for length in (12, 40):
        ids = np.concatenate([tokens, rng.integers(2, CONFIG.vocab_size, size=(1, length - 10))], axis=1)
        mask = np.arange(length)[None] < 10
        outputs.append(np.asarray(encode_tokens(params, ids, mask, config=CONFIG)))
    np.testing.assert_allclose(outputs[0][:, :10], outputs[1][:, :10], atol=1e-5)
    assert np.all(outputs[1][:, 10:] == 0.0)
    # Without the mask, the extra tokens would change the outputs: the test can fail.
    unmasked = np.asarray(T5Encoder(CONFIG).apply({"params": params}, ids, np.ones_like(mask)))
    assert np.abs(unmasked[:, :10] - outputs[1][:, :10]).max() > 1e-2


def test_checkpoint_round_trip(checkpoint, params):
    config, loaded = load_hf_checkpoint(str(checkpoint))
    assert config == CONFIG
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, params), loaded)


def test_load_errors_list_missing_unexpected_and_misshapen_weights(checkpoint):
    weights = load_file(checkpoint / "model.safetensors")
    del weights["encoder.block.1.layer.0.SelfAttention.q.weight"]
    del weights["encoder.final_layer_norm.weight"]
    weights["encoder.block.7.layer.0.SelfAttention.q.weight"] = np.zeros((32, 32), np.float32)
    weights["encoder.block.0.layer.1.DenseReluDense.wo.weight"] = np.zeros((5, 5), np.float32)
    weights["decoder.block.0.layer.0.SelfAttention.q.weight"] = np.zeros((32, 32), np.float32)  # skipped, fine
    save_file(weights, checkpoint / "model.safetensors")
    with pytest.raises(ValueError) as error:
        load_hf_checkpoint(str(checkpoint))
    message = str(error.value)
    missing = "encoder.block.1.layer.0.SelfAttention.q.weight, encoder.final_layer_norm.weight"
    assert f"missing weights (2): {missing}" in message
    assert "unexpected weights (1): encoder.block.7.layer.0.SelfAttention.q.weight" in message
    assert "wrong shapes (1): encoder.block.0.layer.1.DenseReluDense.wo.weight" in message
    assert "decoder" not in message


def test_load_errors_name_the_fix(tmp_path, checkpoint):
    with pytest.raises(FileNotFoundError, match="No config.json"):
        load_hf_checkpoint(str(tmp_path / "nowhere"))
    (checkpoint / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="No weights .*save_pretrained"):
        load_hf_checkpoint(str(checkpoint))
    with pytest.raises(FileNotFoundError, match="neither a built-in encoder"):
        load_text_encoder("./no/such/encoder")
    config = json.loads((checkpoint / "config.json").read_text())
    (checkpoint / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    with pytest.raises(ValueError, match="only T5-family"):
        load_hf_checkpoint(str(checkpoint))
    with pytest.raises(ValueError, match="feed_forward_proj='gated-tanh-x'"):
        T5EncoderConfig(feed_forward_proj="gated-tanh-x")


def test_missing_tokenizer_is_a_clear_error(checkpoint):
    with pytest.raises(FileNotFoundError, match="No tokenizer in .*save_pretrained"):
        load_text_encoder(str(checkpoint))


def test_every_parameter_has_logical_axes():
    boxed = abstract_params(CONFIG)
    specs = jax.tree.leaves(nn.get_partition_spec(boxed), is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    shapes = jax.tree.leaves(nn.unbox(boxed))
    assert len(specs) == len(shapes) == 3 + CONFIG.num_layers * 9
    for spec, shape in zip(specs, shapes):
        assert len(spec) == len(shape.shape) and set(spec) <= set(LOGICAL_AXES), (spec, shape)
    assert sum(s.size for s in shapes) == CONFIG.num_params


def test_encoder_is_frozen(params):
    ids = jnp.ones((2, 6), jnp.int32)
    mask = jnp.ones((2, 6), bool)
    grads = jax.grad(lambda p: jnp.sum(encode_tokens(p, ids, mask, config=CONFIG) ** 2))(params)
    assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(grads))


@pytest.fixture(scope="module")
def builtin_encoder():
    return load_text_encoder("tiny-random-byt5", max_length=16, dtype=jnp.float32)


def test_text_encoder_shards_the_batch_and_matches_unsharded_encoding(builtin_encoder):
    encoder = builtin_encoder
    assert encoder.num_shards == len(jax.local_devices()) == 8
    prompts = ["a red circle", "two blue squares", "", "a green triangle left of a circle", "é"]  # 5: padded to 8
    with pytest.warns(UserWarning, match="2 of 5 prompts are longer than max_length=16"):
        embeddings, mask = encoder.encode(prompts)
        ids, expected_mask = encoder.tokenize(prompts)
    assert embeddings.shape == (5, 16, encoder.dim) and embeddings.dtype == jnp.float32
    assert mask.shape == (5, 16) and mask.dtype == jnp.bool_
    np.testing.assert_array_equal(mask, expected_mask)
    assert expected_mask.sum(1).tolist() == [13, 16, 1, 16, 3]  # UTF-8 bytes + EOS, capped at 16
    expected = encode_tokens(jax.device_get(encoder.params), ids, expected_mask, config=encoder.config)
    np.testing.assert_allclose(embeddings, expected, atol=1e-5)

    prompts = [f"{i} red circles" for i in range(16)]  # 16 divides over 8 devices: no padding, stays sharded
    embeddings, _ = encoder.encode(prompts)
    assert embeddings.sharding.spec == jax.sharding.PartitionSpec(("batch",))
    params = jax.device_get(encoder.params)
    bf16 = TextEncoder("bf16", encoder.config, params, encoder.tokenizer, max_length=16, dtype=jnp.bfloat16)
    embeddings_bf16, _ = bf16.encode(prompts)
    assert embeddings_bf16.dtype == jnp.float32
    assert 0 < np.abs(np.asarray(embeddings_bf16) - np.asarray(embeddings)).max() < 0.1


def test_encode_rejects_bad_input(builtin_encoder):
    with pytest.raises(ValueError, match="no prompts"):
        builtin_encoder.encode([])
    with pytest.raises(TypeError, match="wrap it"):
        builtin_encoder.encode("a red circle")


def test_fsdp_sharded_parameters_give_the_same_embeddings(builtin_encoder):
    """T5-XXL-style placement: params sharded over 'fsdp' by logical axis rules, batch over both axes."""
    from imagen_jax.text import logical_param_shardings

    mesh = jax.make_mesh((2, 4), ("data", "fsdp"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    rules = (("embed", "fsdp"), ("mlp", None), ("heads", None), ("kv", None), ("vocab", None), ("relpos", None))
    shardings = logical_param_shardings(builtin_encoder.config, mesh, rules)
    assert shardings["layers_0"]["mlp"]["wo"]["kernel"].spec == jax.sharding.PartitionSpec(None, "fsdp")
    params = jax.device_get(builtin_encoder.params)
    fsdp = TextEncoder(
        "fsdp", builtin_encoder.config, params, builtin_encoder.tokenizer, max_length=16, dtype=jnp.float32,
        mesh=mesh, batch_axes=("data", "fsdp"), param_shardings=shardings,
    )  # fmt: skip
    assert fsdp.params["token_embedding"]["embedding"].sharding.spec == jax.sharding.PartitionSpec(None, "fsdp")
    prompts = [f"{i} green squares" for i in range(8)]
    np.testing.assert_allclose(fsdp.encode(prompts)[0], builtin_encoder.encode(prompts)[0], atol=1e-5)
    with pytest.raises(ValueError, match="Auto axis types"):
        explicit_mesh = jax.make_mesh((8,), ("batch",))  # JAX 0.10's default axis type is Explicit
        TextEncoder("x", builtin_encoder.config, params, builtin_encoder.tokenizer, mesh=explicit_mesh)


def test_word_encoder_gives_one_token_per_word_and_covers_the_shapes_captions():
    from imagen_jax.data.shapes_scene import sample_scene
    from imagen_jax.text.encoder import load_text_encoder

    encoder = load_text_encoder("tiny-random-t5-words", max_length=24)
    assert encoder.config.vocab_size >= len(encoder.tokenizer)
    ids, mask = encoder.tokenize(["A Red, circle!", "a red circle", "a zebra"])
    np.testing.assert_array_equal(ids[0], ids[1])  # case and punctuation do not matter
    assert mask[1].sum() == 4 and ids[1][3] == encoder.tokenizer.eos_token_id  # 3 words + </s>
    assert ids[2][1] == encoder.tokenizer.unk_token_id
    captions = [sample_scene(0, i, split).caption for split in ("train", "test") for i in range(2000)]
    ids, mask = encoder.tokenize(captions)
    assert not (ids == encoder.tokenizer.unk_token_id).any() and mask.sum(1).max() <= 24
    embedding, _ = encoder.encode(["a red circle", "a blue circle"])
    assert embedding.shape == (2, 24, 256) and not np.allclose(embedding[0], embedding[1])


def test_ordered_word_encoder_tells_a_words_role_from_its_neighbours():
    from imagen_jax.text.encoder import load_text_encoder
    from imagen_jax.text.probe import color_role_probe_accuracy as _color_role_probe_accuracy

    ordered = load_text_encoder("tiny-random-t5-words-ordered", max_length=24)
    plain = load_text_encoder("tiny-random-t5-words", max_length=24)
    accuracy, base_rate = _color_role_probe_accuracy(ordered)
    plain_accuracy, _ = _color_role_probe_accuracy(plain)
    assert accuracy > 0.97 and plain_accuracy < base_rate + 0.05, (accuracy, plain_accuracy, base_rate)
    np.testing.assert_array_equal(ordered.tokenize(["a red circle"])[0], plain.tokenize(["a red circle"])[0])
    bias, plain_bias = (e.params["relative_position_bias"]["embedding"] for e in (ordered, plain))
    np.testing.assert_allclose(np.asarray(bias), np.asarray(plain_bias) * 16.0, rtol=1e-6)  # std 1 vs 256^-0.5


def test_sharded_loader_places_each_tensor_on_its_shards_and_reads_no_decoder_tensor(tmp_path, params, monkeypatch):
    """load_text_encoder(mesh=): the params of an encoder-decoder checkpoint, each put on its
    FSDP shards (8 devices, the UNets' logical rules) as it is read: bit-identical to the plain
    loader's, and the decoder's bytes never read."""
    import imagen_jax.text.hf_checkpoint as hf
    from imagen_jax.parallel import make_mesh
    from imagen_jax.text.encoder import sharded_placer

    save_hf_checkpoint(str(tmp_path), params, CONFIG)
    weights = load_file(str(tmp_path / "model.safetensors"))
    decoder = {f"decoder.block.{i}.layer.0.SelfAttention.q.weight": np.ones((256, 256), np.float32) for i in range(4)}
    save_file({**weights, **decoder}, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    read = []
    real_path = hf.storage.path

    class CountingFile:
        def __init__(self, f):
            self.f = f

        def read(self, n=-1):
            data = self.f.read(n)
            read.append(len(data))
            return data

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    class CountingPath:
        def __init__(self, p):
            self.p = real_path(p)

        def open(self, mode="rb"):
            return CountingFile(self.p.open(mode))

        def __getattr__(self, name):
            return getattr(self.p, name)

        def __truediv__(self, other):
            return self.p / other

    monkeypatch.setattr(hf.storage, "path", CountingPath)
    _, plain = load_hf_checkpoint(str(tmp_path))
    plain_bytes = sum(read)
    encoder_bytes = sum(w.nbytes for w in weights.values())
    header = (tmp_path / "model.safetensors").stat().st_size - encoder_bytes - sum(w.nbytes for w in decoder.values())
    assert plain_bytes == header + encoder_bytes  # every encoder byte once, no decoder byte
    mesh = make_mesh(data=2, fsdp=4)
    read.clear()
    _, sharded = load_hf_checkpoint(str(tmp_path), np.float32, sharded_placer(mesh))
    assert sum(read) == plain_bytes
    leaves = jax.tree_util.tree_leaves_with_path(sharded)
    for (path, x), y in zip(leaves, jax.tree_util.tree_leaves(plain)):
        assert isinstance(x, jax.Array) and len(x.addressable_shards) == 8, path
        np.testing.assert_array_equal(np.asarray(x), y)  # bit-identical
    assert sharded["layers_0"]["mlp"]["wo"]["kernel"].sharding.spec == jax.sharding.PartitionSpec("fsdp", None)
    assert sharded["token_embedding"]["embedding"].sharding.spec != jax.sharding.PartitionSpec()


@pytest.mark.parametrize(
    "name, path, index",
    [  # a shard along the stored tensor's rows reads only those rows
        ("shared.weight", ("token_embedding", "embedding"), (slice(16, 32), slice(None))),
        ("encoder.block.1.layer.0.SelfAttention.q.weight", ("layers_1", "attention", "query", "kernel"),
         (slice(None), slice(1, 3), slice(None))),
        ("encoder.block.0.layer.1.DenseReluDense.wi_0.weight", ("layers_0", "mlp", "wi_0", "kernel"),
         (slice(None), slice(12, 24))),
        ("encoder.block.0.layer.0.SelfAttention.o.weight", ("layers_0", "attention", "out", "kernel"),
         (slice(None), slice(None), slice(8, 16))),
        # a shard along the stored tensor's columns reads whole rows
        ("encoder.block.0.layer.1.DenseReluDense.wo.weight", ("layers_0", "mlp", "wo", "kernel"),
         (slice(12, 24), slice(None))),
    ],
)  # fmt: skip
def test_param_view_reads_only_the_rows_a_shard_needs(params, name, path, index):
    """A device's shard of a parameter, read from its stored HF tensor, equals that slice of
    the whole parameter, and reads the stored rows it needs (all rows only for wo, which is
    stored transposed to its split)."""
    from imagen_jax.text.hf_checkpoint import ParamView, StoredTensor, hf_state_dict, hf_to_params_rules

    stored_array = hf_state_dict(params, CONFIG)[name]
    requests = []

    def read_rows(begin, end):
        requests.append((begin, end))
        return stored_array[begin:end]

    stored = StoredTensor(stored_array.shape, stored_array.dtype, read_rows)
    layout = hf_to_params_rules(CONFIG)[name][1]
    view = ParamView(stored, layout, CONFIG, np.float32)
    whole = np.asarray(functools.reduce(lambda node, key: node[key], path, params))
    np.testing.assert_array_equal(view[index], whole[index])
    rows_read = sum(end - begin for begin, end in requests)
    if name.endswith("wo.weight"):
        assert rows_read == stored_array.shape[0]
    else:
        assert 0 < rows_read <= stored_array.shape[0] // 2
    view[index]
    assert len(requests) == 1  # each row range is read once
