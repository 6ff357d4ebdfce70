"""Orbax checkpoints: round trip, keep-last-K, restore onto a different device count."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from imagen_jax.parallel import make_mesh
from imagen_jax.train.checkpoints import Checkpoints, abstract_like


def sharded_state(mesh, value=1.0):
    shardings = {"w": NamedSharding(mesh, P("fsdp", None)), "step": NamedSharding(mesh, P())}
    state = {"w": jnp.arange(64.0).reshape(16, 4) * value, "step": jnp.asarray(7, jnp.int32)}
    return jax.device_put(state, shardings), shardings


def test_round_trip_keep_last_k_and_reshard(tmp_path):
    mesh8 = make_mesh(data=1, fsdp=8)
    ckpt = Checkpoints(str(tmp_path / "ckpt"), max_to_keep=2, save_every=10)
    for step in (5, 10, 15, 20, 30):
        state, _ = sharded_state(mesh8, value=step)
        ckpt.save(step, state, {"seed": 1, "step": step}, {"next_element": 8 * step} if step != 20 else None)
    ckpt.wait()
    assert ckpt.all_steps() == [20, 30]  # 5 and 15 were not due; 10 fell out of the last 2
    assert ckpt.saved_config() == {"seed": 1, "step": 30}

    # Restore onto a mesh of 4 devices with another layout.
    mesh4 = make_mesh(data=2, fsdp=2, devices=jax.devices()[:4])
    _, shardings4 = sharded_state(mesh4)
    shapes = jax.eval_shape(lambda: sharded_state(mesh4)[0])
    restored, config, position = ckpt.restore(30, abstract_like(shapes, shardings4))
    assert position == {"next_element": 240}
    assert ckpt.restore(20, abstract_like(shapes, shardings4))[2] is None  # saved without a position
    np.testing.assert_array_equal(np.asarray(restored["w"]), np.arange(64.0).reshape(16, 4) * 30)
    assert restored["w"].sharding.mesh.devices.size == 4
    assert restored["w"].sharding.spec == P("fsdp", None)
    assert config["step"] == 30
    ckpt.close()
