"""The color-role probe (imagen_jax.text.probe) on text encoders: does the output at a color
word say whether it names the background? Built-in names, checkpoint directories, and
the demo's pretrained encoder under pretraining variants (settings changed by --variant).

    python benchmarks/text_role_probe.py [ENCODER ...] [--variant neighbor_weight=0 ...] \
        [--out benchmarks/results/text_role_probe.json]

Default: the two random word encoders and tiny-t5-words-shapes with the masked LM alone
(neighbor_weight=0) and as built (the neighbour heads). A variant is pretrained into a
temporary folder (about 80 s each on 2 cores)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile

from results_io import write_results

from imagen_jax.text.encoder import load_text_encoder
from imagen_jax.text.pretrain import PretrainSettings, ensure_pretrained
from imagen_jax.text.probe import color_role_probe_accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("encoders", nargs="*", default=["tiny-random-t5-words", "tiny-random-t5-words-ordered"])
    parser.add_argument("--variant", action="append", default=None, help="pretraining FIELD=VALUE (repeatable)")
    parser.add_argument("--out", default="benchmarks/results/text_role_probe.json")
    args = parser.parse_args()
    variants = args.variant if args.variant is not None else ["neighbor_weight=0", "neighbor_weight=1"]
    rows = []
    for name in args.encoders:
        accuracy, base_rate = color_role_probe_accuracy(load_text_encoder(name, max_length=24))
        rows.append({"encoder": name, "probe_accuracy": accuracy, "base_rate": base_rate})
        print(rows[-1])
    for variant in variants:
        field, value = variant.split("=", 1)
        settings = dataclasses.replace(PretrainSettings(), **{field: type(getattr(PretrainSettings(), field))(value)})
        with tempfile.TemporaryDirectory() as folder:
            ensure_pretrained(folder, settings, progress=False)
            metrics = json.load(open(f"{folder}/pretrain.json"))["metrics"]
            accuracy, base_rate = color_role_probe_accuracy(load_text_encoder(folder, max_length=24))
        rows.append({"encoder": f"tiny-t5-words-shapes ({variant})", "probe_accuracy": accuracy,
                     "base_rate": base_rate, "pretraining": metrics})  # fmt: skip
        print(rows[-1])
    write_results(args.out, {"rows": rows})


if __name__ == "__main__":
    main()
