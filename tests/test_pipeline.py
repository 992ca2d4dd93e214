"""The grain input pipeline: per-process splits, batches, flips and exact resumption."""

import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

from ditjax.autoencoder import create_autoencoder
from ditjax.data.demo_shapes import generate_demo_images
from ditjax.data.extract import extract_latents
from ditjax.data.pipeline import (
    iterator_checkpoint_args,
    iterator_checkpoint_handler,
    make_train_iterator,
    open_latent_source,
    process_record_indices,
)
from ditjax.data.sources import open_source

NUM_RECORDS = 37
GLOBAL_BATCH = 8
BATCHES_PER_EPOCH = NUM_RECORDS // GLOBAL_BATCH  # 4; 5 records of each epoch are dropped


def epoch_permutation(seed: int, epoch: int) -> np.ndarray:
    """The documented global order: a permutation per epoch from (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(NUM_RECORDS)


@pytest.mark.parametrize("processes", [2, 4])
def test_process_splits_have_no_overlap_and_no_gap(processes):
    local = GLOBAL_BATCH // processes
    per_process = [
        process_record_indices(
            NUM_RECORDS,
            global_batch_size=GLOBAL_BATCH,
            seed=3,
            process_index=p,
            process_count=processes,
            num_batches=2 * BATCHES_PER_EPOCH,
        )
        for p in range(processes)
    ]
    assert all(r.shape == (2 * BATCHES_PER_EPOCH, local) for r in per_process)
    single = process_record_indices(
        NUM_RECORDS,
        global_batch_size=GLOBAL_BATCH,
        seed=3,
        process_index=0,
        process_count=1,
        num_batches=2 * BATCHES_PER_EPOCH,
    )
    for epoch in range(2):
        batches = slice(epoch * BATCHES_PER_EPOCH, (epoch + 1) * BATCHES_PER_EPOCH)
        read = [r[batches].ravel().tolist() for r in per_process]
        everything = [record for records in read for record in records]
        # Disjoint: no record is read twice in an epoch, by one process or by two.
        assert len(everything) == len(set(everything)) == BATCHES_PER_EPOCH * GLOBAL_BATCH
        # No gap: the only records not read are the dropped remainder, the last
        # NUM_RECORDS mod GLOBAL_BATCH = 5 positions of this epoch's permutation.
        permutation = epoch_permutation(3, epoch)
        dropped = set(range(NUM_RECORDS)) - set(everything)
        assert dropped == set(permutation[BATCHES_PER_EPOCH * GLOBAL_BATCH :].tolist())
        # Global batch b is the processes' slices side by side, as one process reads it.
        together = np.concatenate([r[batches] for r in per_process], axis=1)
        np.testing.assert_array_equal(together, single[batches])
        np.testing.assert_array_equal(together.ravel(), permutation[: BATCHES_PER_EPOCH * 8])
    # Each epoch is shuffled anew.
    assert not np.array_equal(single[:BATCHES_PER_EPOCH], single[BATCHES_PER_EPOCH:])


def test_indivisible_batch_and_bad_process_are_refused():
    with pytest.raises(ValueError, match=r"global_batch_size 10 .* 4 processes"):
        process_record_indices(
            40, global_batch_size=10, seed=0, process_index=0, process_count=4, num_batches=1
        )
    with pytest.raises(ValueError, match="process_index 2"):
        process_record_indices(
            40, global_batch_size=8, seed=0, process_index=2, process_count=2, num_batches=1
        )
    with pytest.raises(ValueError, match="fewer than one global batch"):
        process_record_indices(
            5, global_batch_size=8, seed=0, process_index=0, process_count=1, num_batches=1
        )


@pytest.fixture(scope="module")
def latents(tmp_path_factory) -> str:
    """A latent dataset of NUM_RECORDS demo images at 16 x 16 (identity autoencoder)."""
    root = tmp_path_factory.mktemp("pipeline")
    images, labels = generate_demo_images(4, seed=0)
    for i, (image, label) in enumerate(zip(images[:NUM_RECORDS], labels, strict=False)):
        folder = root / "images" / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:02d}.png")
    out = root / "latents"
    extract_latents(
        open_source(f"folder:{root / 'images'}"),
        create_autoencoder("identity"),
        16,
        str(out),
        batch_size=16,
        examples_per_shard=10,
        progress=False,
    )
    return str(out)


@pytest.fixture(scope="module")
def record_of(latents):
    """float32 mean bytes -> (record, flipped?) for every stored mean and mean_flip."""
    source = open_latent_source(latents)
    assert len(source) == NUM_RECORDS
    lookup = {}
    for i in range(len(source)):
        lookup[source[i]["mean"].astype(np.float32).tobytes()] = (i, False)
        lookup[source[i]["mean_flip"].astype(np.float32).tobytes()] = (i, True)
    assert len(lookup) == 2 * NUM_RECORDS  # every image and flip is distinct
    return lookup


def identify(batch, record_of):
    return [record_of[x.tobytes()] for x in batch["mean"]]


def iterator(latents, **kwargs):
    kwargs = {"global_batch_size": GLOBAL_BATCH, "seed": 0, **kwargs}
    return make_train_iterator(latents, **kwargs)


def test_batches_have_shapes_dtypes_and_consistent_fields(latents, record_of):
    source = open_latent_source(latents)
    batches = iterator(latents)
    for _ in range(2 * BATCHES_PER_EPOCH):
        batch = next(batches)
        assert set(batch) == {"mean", "logvar", "label"}
        assert batch["mean"].shape == batch["logvar"].shape == (8, 16, 16, 3)
        assert batch["mean"].dtype == batch["logvar"].dtype == np.float32
        assert batch["label"].shape == (8,) and batch["label"].dtype == np.int32
        for i, (record, flipped) in enumerate(identify(batch, record_of)):
            assert batch["label"][i] == source[record]["label"]
            logvar = source[record]["logvar_flip" if flipped else "logvar"]
            np.testing.assert_array_equal(batch["logvar"][i], logvar.astype(np.float32))


def test_iterator_follows_the_global_order(latents, record_of):
    batches = iterator(latents, seed=5)
    read = [r for _ in range(BATCHES_PER_EPOCH) for r, _ in identify(next(batches), record_of)]
    assert read == epoch_permutation(5, 0)[: BATCHES_PER_EPOCH * GLOBAL_BATCH].tolist()


def test_processes_read_their_slice_of_the_same_global_batches(latents):
    single = iterator(latents, process_index=0, process_count=1)
    halves = [iterator(latents, process_index=p, process_count=2) for p in range(2)]
    for _ in range(BATCHES_PER_EPOCH + 1):  # into the second epoch
        whole = next(single)
        parts = [next(h) for h in halves]
        assert parts[0]["mean"].shape == (4, 16, 16, 3)
        for key in whole:
            np.testing.assert_array_equal(whole[key], np.concatenate([p[key] for p in parts]))
    with pytest.raises(ValueError, match="not a positive multiple"):
        iterator(latents, global_batch_size=6, process_index=0, process_count=4)


def test_flips_happen_and_are_deterministic(latents, record_of):
    def flips(seed):
        batches = iterator(latents, seed=seed)
        return [f for _ in range(12) for _, f in identify(next(batches), record_of)]

    first = flips(0)
    assert 0.3 < np.mean(first) < 0.7  # both variants appear, about equally often
    assert flips(0) == first
    assert flips(1) != first
    # A record is flipped in some epochs and not in others: the flip is drawn per epoch.
    batches = iterator(latents, seed=0)
    seen: dict[int, set[bool]] = {}
    for _ in range(6 * BATCHES_PER_EPOCH):
        for record, flipped in identify(next(batches), record_of):
            seen.setdefault(record, set()).add(flipped)
    assert sum(len(v) == 2 for v in seen.values()) > NUM_RECORDS // 2


def test_random_flip_off_reads_only_unflipped_moments_in_the_same_order(latents, record_of):
    plain = iterator(latents, seed=0, random_flip=False)
    flipping = iterator(latents, seed=0)
    for _ in range(2 * BATCHES_PER_EPOCH):
        got = identify(next(plain), record_of)
        assert not any(flipped for _, flipped in got)
        assert [r for r, _ in got] == [r for r, _ in identify(next(flipping), record_of)]


def assert_same_batches(got, expected):
    for a, b in zip(got, expected, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_get_state_set_state_resumes_exactly(latents):
    batches = iterator(latents, seed=1)
    for _ in range(3):
        next(batches)
    state = batches.get_state()
    expected = [next(batches) for _ in range(6)]  # crosses into the second epoch
    restored = iterator(latents, seed=1)
    restored.set_state(state)
    assert_same_batches([next(restored) for _ in range(6)], expected)
    # Restoring an earlier state rewinds a running iterator too.
    batches.set_state(state)
    assert_same_batches([next(batches) for _ in range(6)], expected)


def test_orbax_round_trip_resumes_exactly(latents, tmp_path):
    batches = iterator(latents, seed=2)
    for _ in range(5):
        next(batches)
    manager = ocp.CheckpointManager(
        tmp_path / "checkpoints", item_handlers={"data": iterator_checkpoint_handler()}
    )
    manager.save(5, args=ocp.args.Composite(data=iterator_checkpoint_args(batches, save=True)))
    manager.wait_until_finished()
    expected = [next(batches) for _ in range(4)]

    fresh = iterator(latents, seed=2)
    manager.restore(5, args=ocp.args.Composite(data=iterator_checkpoint_args(fresh, save=False)))
    assert_same_batches([next(fresh) for _ in range(4)], expected)
    manager.close()


def test_worker_processes_give_the_same_batches(latents):
    threads = iterator(latents, seed=4)
    workers = iterator(latents, seed=4, worker_count=1)
    assert_same_batches([next(workers) for _ in range(3)], [next(threads) for _ in range(3)])


def test_missing_dataset_is_named(tmp_path):
    from ditjax.data.latent_format import read_latent_info

    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
        read_latent_info(str(tmp_path / "nowhere"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "ditjax_latents.json").write_text("{}")
    with pytest.raises(ValueError, match="missing"):
        make_train_iterator(str(tmp_path / "bad"), global_batch_size=8, seed=0)
