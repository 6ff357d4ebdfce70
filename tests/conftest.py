"""Test setup: 8 fake CPU devices for the sharding tests (set before jax is imported)."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# Cloud Storage in the tests is a local GCS JSON API server (fake-gcs-server, started by
# the `gcs` fixture in gcs_server.py). It needs no credentials, and gcsfs's bucket-type lookup
# (a gRPC control-plane call the server does not have) is off. google.auth's metadata-server
# probe is pointed at a closed loopback port so that no test reaches outside this machine.
os.environ.setdefault("FSSPEC_GS", '{"token": "anon"}')
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
os.environ.setdefault("GOOGLE_AUTH_TOKEN_FOR_TESTING", "emulator")  # tensorstore's credentials
os.environ["GCE_METADATA_HOST"] = os.environ["GCE_METADATA_IP"] = "127.0.0.1:9"
os.environ.pop("GOOGLE_APPLICATION_CREDENTIALS", None)

from gcs_server import gcs, gcs_mount  # noqa: E402,F401  (fixtures)
from torchvision_cpu import make_torchvision_importable  # noqa: E402

make_torchvision_importable()  # transformers and pytorch-fid import torchvision (see there)
