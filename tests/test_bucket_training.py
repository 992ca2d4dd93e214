"""Latents written to and trained from a bucket (`gs://`, faked on local disk: fake_bucket.py)."""

import pytest

from ditjax.autoencoder import create_autoencoder
from ditjax.data import read_latent_info
from ditjax.data.extract import extract_latents
from ditjax.data.latent_format import shard_filename
from ditjax.data.sources import open_source
from ditjax.training.loop import train_and_evaluate
from fake_bucket import fake_gcs
from test_training_loop import (
    IMAGE_SIZE,
    assert_bit_identical,
    host_state,
    loop_config,
    write_image_folder,
)

pytestmark = pytest.mark.slow

URL = "gs://latents-bucket/runs/demo16"


def extract(out: str, folder) -> None:
    extract_latents(
        open_source(f"folder:{folder}"),
        create_autoencoder("identity"),
        IMAGE_SIZE,
        out,
        batch_size=16,
        examples_per_shard=16,
        progress=False,
    )


def test_train_from_a_bucket_matches_training_from_disk(tmp_path, monkeypatch):
    folder = write_image_folder(tmp_path / "images")
    local = tmp_path / "latents"
    extract(str(local), folder)
    config = loop_config(str(local), total_steps=2, checkpoint_every=2, log_every=1)
    expected = host_state(train_and_evaluate(config, str(tmp_path / "from_disk")))

    with fake_gcs(tmp_path / "buckets", monkeypatch) as buckets:
        extract(URL, folder)
        in_bucket = buckets.local(URL)
        # The same files, written through epath (shards staged locally, then uploaded).
        assert sorted(p.name for p in in_bucket.iterdir()) == sorted(
            p.name for p in local.iterdir()
        )
        for path in local.iterdir():
            assert (in_bucket / path.name).read_bytes() == path.read_bytes(), path.name
        info = read_latent_info(URL)
        shards = [f"{URL}/{shard_filename(k, 3)}" for k in range(3)]
        assert info["num_examples"] == 40

        config = loop_config(URL, total_steps=2, checkpoint_every=2, log_every=1)
        result = train_and_evaluate(config, str(tmp_path / "from_bucket"))
        # ArrayRecord's C++ reader fetched every shard from the bucket's endpoint.
        read = {url for url, media in buckets.requests if media}
        assert read == set(shards)
    assert result.step == 2
    assert_bit_identical(host_state(result), expected)
    saved = (tmp_path / "from_bucket" / "config.json").read_text()
    assert URL in saved
