"""Training on several prepared dirs (``train --data A --data B --source-weights``): the
weighted sampler, the options, and a tiny two-source run on real ISIC 2017 + HAM10000 images
whose checkpoint lists both sources and which resumes to the uninterrupted result."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from attnmel_cli.data.id_set import count_in, decode_ids
from attnmel_cli.data.manifest import data_fingerprint, read_manifest, write_manifest
from attnmel_cli.data.mix import parse_source_weights, source_names
from attnmel_cli.data.prepare import prepare_dataset
from attnmel_cli.data.sampler import OversamplingSampler
from attnmel_cli.engine.trainer import TrainInterrupted, train
from attnmel_cli.errors import AttnMelError, DataError
from attnmel_cli.io.checkpoint import read_metadata
from attnmel_cli.io.run_dir import LAST

pytestmark = pytest.mark.usefixtures("restore_logging")


def test_unit_weights_give_the_single_source_order() -> None:
    labels = [1, 0, 0, 1, 0, 0, 0]
    plain = OversamplingSampler(labels, 4, seed=2)
    mixed = OversamplingSampler(labels, 4, seed=2, sources=[0, 0, 0, 1, 1, 1, 1],
                                weights=[1, 1])
    for epoch in (0, 3):
        plain.set_epoch(epoch)
        mixed.set_epoch(epoch)
        assert plain.epoch_order() == mixed.epoch_order()


def test_weights_set_each_sources_share_per_epoch() -> None:
    # source 0: 2 melanomas (×4) + 3 others = 11 draws; source 1: 4 melanomas (×4) + 36 = 52
    labels = [1, 1, 0, 0, 0] + [1] * 4 + [0] * 36
    sources = [0] * 5 + [1] * 40
    sampler = OversamplingSampler(labels, 4, seed=1, sources=sources, weights=[1, 0.25],
                                  passes=2)
    assert len(sampler) == 2 * (11 + 13)
    orders = []
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        order = [i for i, _ in sampler.epoch_order()]
        assert len(order) == len(sampler)
        per_source = Counter(sources[i] for i in order)
        assert per_source == {0: 22, 1: 26}
        # the target is drawn whole each pass, melanomas 4 times
        assert Counter(i for i in order if sources[i] == 0) == {0: 8, 1: 8, 2: 2, 3: 2, 4: 2}
        orders.append(order)
    assert orders[0] != orders[1]  # a fresh subset each epoch …
    sampler.set_epoch(0)
    assert [i for i, _ in sampler.epoch_order()] == orders[0]  # … a function of (seed, epoch)
    double = OversamplingSampler(labels, 4, seed=1, sources=sources, weights=[2, 0])
    assert Counter(sources[i] for i, _ in double.epoch_order()) == {0: 22}


def test_source_names_and_weights_are_checked(tmp_path: Path) -> None:
    names = source_names([tmp_path / "isic2017", tmp_path / "ham10000"])
    assert names == ["isic2017", "ham10000"]
    assert parse_source_weights("ham10000=0.25", names) == [1.0, 0.25]
    assert parse_source_weights("", names) == [1.0, 1.0]
    for bad, message in (("ham=0.5", "no source named 'ham'"), ("ham10000=x", "NAME=W"),
                         ("ham10000=-1", "NAME=W"), ("isic2017=0", "target source")):
        with pytest.raises(AttnMelError, match=message):
            parse_source_weights(bad, names)
    with pytest.raises(AttnMelError, match="two sources are named"):
        source_names([tmp_path / "a" / "x", tmp_path / "b" / "x"])


@pytest.fixture(scope="module")
def ham_prepared(tmp_path_factory: pytest.TempPathFactory, ham_subset) -> Path:
    root = tmp_path_factory.mktemp("ham")
    src = ham_subset(root / "src", lesions=8)
    prepare_dataset(src, root / "ham10000", workers=1, crop_fraction=1.0)
    return root / "ham10000"


@pytest.fixture(scope="module")
def config(tiny_config):
    return partial(tiny_config, epochs=2, seed=11)


@pytest.fixture(scope="module")
def two_source_run(config, prepared: Path, ham_prepared: Path,
                   tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mixed") / "run"
    train(config([prepared, ham_prepared], out, source_weights="ham10000=0.5"))
    return out


def test_two_sources_train_and_the_checkpoint_lists_both(
    two_source_run: Path, prepared: Path, ham_prepared: Path,
) -> None:
    meta = read_metadata(two_source_run / LAST)
    target_rows, ham_rows = read_manifest(prepared), read_manifest(ham_prepared)
    assert meta.data_fingerprint == data_fingerprint(target_rows)
    assert [s["name"] for s in meta.sources] == [prepared.name, "ham10000"]
    target, ham = meta.sources
    assert (target["role"], ham["role"]) == ("target", "extra")
    assert (target["weight"], ham["weight"]) == (1.0, 0.5)
    assert ham["fingerprint"] == data_fingerprint(ham_rows, 1.0)
    assert ham["images"] == len(ham_rows)  # its train and val splits both train
    assert target["images"] == sum(r.split == "train" for r in target_rows)
    assert (target["crop_fraction"], ham["crop_fraction"]) == (0.8, 1.0)
    assert meta.crop_fraction == 0.8  # photos are scored as the target was prepared
    assert meta.train_config["data"] == [prepared.name, "ham10000"]  # names, not local paths
    assert meta.train_config["source_weights"] == "ham10000=0.5"


def test_two_source_run_resumes_to_the_uninterrupted_result(
    config, prepared: Path, ham_prepared: Path, two_source_run: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, assert_same_run, interrupt_at,
) -> None:
    out = tmp_path / "resumed"
    interrupt_at(7)
    with pytest.raises(TrainInterrupted, match="holds epoch 1"):
        train(config([prepared, ham_prepared], out, source_weights="ham10000=0.5"))
    monkeypatch.undo()
    with pytest.raises(AttnMelError, match="source_weights"):
        train(config([prepared, ham_prepared], out, source_weights="ham10000=1", resume=True))
    with pytest.raises(AttnMelError, match="these differ"):
        train(config([prepared], out, resume=True))
    train(config([prepared, ham_prepared], out, source_weights="ham10000=0.5", resume=True))
    assert_same_run(out, two_source_run)


def test_an_extra_source_holding_validation_images_is_refused(
    config, prepared: Path, tmp_path: Path,
) -> None:
    leaky = tmp_path / "leaky"
    shutil.copytree(prepared, leaky)
    write_manifest(leaky, read_manifest(leaky, "val"))  # the target's val images, as training
    with pytest.raises(DataError, match="also validation images"):
        train(config([prepared, leaky], tmp_path / "run"))


def test_cli_takes_repeated_data_and_source_weights(
    invoke, prepared: Path, ham_prepared: Path, tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    result = invoke("train", "--data", prepared, "--data", ham_prepared, "--out", out,
                    "--source-weights", "ham10000=0.25", "--no-pretrained", "--width", "0.0625",
                    "--image-size", "64", "--epochs", "1", "--batch-size", "16", "-j", "0",
                    "--device", "cpu")
    assert result.exit_code == 0, result.output
    sources = json.loads(read_metadata(out / LAST).to_header()["sources"])
    assert [s["weight"] for s in sources] == [1.0, 0.25]
    assert np.isclose(sum(s["images"] for s in sources),
                      len(read_manifest(ham_prepared)) + len(read_manifest(prepared, "train")))
    bad = invoke("train", "--data", prepared, "--data", ham_prepared, "--out", tmp_path / "r2",
                 "--source-weights", "nope=1", "--no-pretrained")
    assert bad.exit_code != 0 and "no source named 'nope'" in bad.output


def test_two_stage_run_inherits_the_first_stages_sources_and_image_ids(
    config, prepared: Path, ham_prepared: Path, tmp_path: Path,
) -> None:
    stage1 = tmp_path / "stage1"
    train(config([ham_prepared], stage1, epochs=1, train_splits="train,val"))
    train(config([prepared], tmp_path / "two", epochs=1, init=stage1 / LAST))
    meta = read_metadata(tmp_path / "two" / LAST)
    target, init = meta.sources
    ham_rows = read_manifest(ham_prepared)
    assert (target["role"], target["name"]) == ("target", prepared.name)
    assert (init["role"], init["name"], init["checkpoint"]) == ("init", "ham10000", LAST)
    assert init["fingerprint"] == data_fingerprint(ham_rows, 1.0)
    seen = decode_ids(meta.train_image_ids)
    assert count_in(seen, [r.image_id for r in ham_rows]) == len(ham_rows)
    assert count_in(seen, [r.image_id for r in read_manifest(prepared, "val")]) == 0
