"""The fuzz targets start from inputs that reach the code under test: a decode target whose
seeds were all refused before decoding (a memory budget below the codecs' fixed buffers
did that once) would fuzz nothing but the refusal."""

from __future__ import annotations

from tests.fuzz.seeds import SEEDS
from tests.fuzz.targets import DECODER, SIZE


def test_every_decode_seed_decodes() -> None:
    for seed in SEEDS["decode"]():
        assert DECODER(seed, SIZE).shape == (*SIZE, 3)
