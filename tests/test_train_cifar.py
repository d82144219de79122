"""Smoke test of experiments/train_cifar.py: a tiny run from a folder in the real CIFAR-10
format writes its metrics, checks, figures and summary, and --resume trains it further."""

import jax
import numpy as np
import pytest

from meanfield.io import results
from meanfield.training import data, initcheck
from meanfield.training.train import TrainConfig, Trainer, restore_checkpoint
from tests.helpers import load_script, run_script, write_cifar_folder

TINY = [
    "--depth",
    "2",
    "--channels",
    "4",
    "--kernel-size",
    "3",
    "--train-size",
    "64",
    "--test-size",
    "32",
    "--batch-size",
    "32",
    "--check-batch",
    "16",
    "--no-progress",
    "--formats",
    "png",
]


@pytest.mark.slow
def test_smoke_run_writes_everything_and_resumes(tmp_path):
    folder, *_ = write_cifar_folder(tmp_path / "data", per_batch=16, test=32)
    out, _ = run_script(
        "train_cifar",
        [
            "--smoke",
            "--data-dir",
            str(folder),
            "--out",
            str(tmp_path / "runs"),
            "--epochs",
            "1",
            *TINY,
        ]
    )
    for name in ("run.json", "summary.csv", "summary.json", "learning_curves.png", "initcheck.png"):
        assert (out / name).is_file(), name
    summary = results.load_json(out / "summary.json")["summary"]
    assert [s["setup"] for s in summary] == ["he-none", "depth_scaled-none", "he-bn_post"]
    for s in summary:
        assert s["seeds"] == 2 and s["last_epoch"] == 1
        rows = results.load_jsonl(out / s["setup"] / "metrics.jsonl")
        assert sorted((r["epoch"], r["seed"]) for r in rows) == [(0, 0), (0, 1), (1, 0), (1, 1)]
        last = [r["val_accuracy"] for r in sorted(rows, key=lambda r: r["seed"]) if r["epoch"] == 1]
        assert s["val_accuracy_last_mean"] == pytest.approx(np.mean(last), abs=1e-12)
        check = results.load_json(out / s["setup"] / "initcheck.json")
        assert check["networks"] == 2 and check["batch"] == 16
        assert np.isfinite(check["summary"]["m2_z"]["predicted_log10"])
    # The reported accuracy is correct/total of the saved networks' logits on the test images.
    setup = out / "he-bn_post"
    accuracy = _accuracy_from_checkpoint(setup, folder, epoch=1)
    rows = results.load_jsonl(setup / "metrics.jsonl")
    reported = [r["val_accuracy"] for r in sorted(rows, key=lambda r: r["seed"]) if r["epoch"] == 1]
    np.testing.assert_allclose(reported, accuracy, atol=1e-12)
    # The run goes on from its checkpoints with the saved settings, one epoch more.
    again, _ = run_script(
        "train_cifar",
        [
            "--resume",
            str(out),
            "--epochs",
            "2",
            "--no-progress",
            "--data-dir",
            str(folder),
            "--formats",
            "png",
        ]
    )
    assert again == out
    rows = results.load_jsonl(out / "he-bn_post" / "metrics.jsonl")
    assert max(r["epoch"] for r in rows) == 2 and len(rows) == 6
    assert results.load_json(out / "summary.json")["summary"][0]["last_epoch"] == 2


def _accuracy_from_checkpoint(setup, folder, *, epoch):
    """Per seed, the fraction of test images whose largest logit is the label, from the
    checkpoint of ``epoch`` and the model applied here (BN with its running averages)."""
    config = TrainConfig.from_dict(results.load_json(setup / "config.json")["train"])
    dataset = data.load(folder, train_size=64, test_size=32, download_missing=False)
    trainer = Trainer(config, dataset.mean, dataset.std)
    path = setup / "checkpoints" / f"epoch_{epoch:04d}.msgpack"
    state, saved_epoch, _ = restore_checkpoint(path, trainer.init_state())
    assert saved_epoch == epoch
    x = data.normalize(dataset.x_test, dataset.mean, dataset.std)

    def logits(params, batch_stats):
        variables = {"params": params, "batch_stats": batch_stats}
        return trainer.model.apply(variables, x, train=False)

    out = np.asarray(jax.vmap(logits)(state.params, state.batch_stats))  # (seeds, N, 10)
    return np.mean(np.argmax(out, axis=-1) == dataset.y_test[None], axis=1)


def test_bad_flags_are_refused(tmp_path, capsys):

    script = load_script("train_cifar")
    with pytest.raises(SystemExit):
        script.main(["--smoke", "--preset", "fig2"])
    assert "--smoke contradicts --preset fig2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.main(["--depth", "0"])
    assert "--depth must be >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.main(["--resume", str(tmp_path)])
    assert "--resume must name a run folder with a run.json" in capsys.readouterr().err


@pytest.mark.slow
def test_check_only_writes_the_prediction_check_without_training(tmp_path):
    folder, *_ = write_cifar_folder(tmp_path / "data", per_batch=16, test=32)
    out, _ = run_script(
        "train_cifar",
        [
            "--check-only",
            "--setups",
            "depth_scaled-none",
            "--seeds",
            "3",
            "--data-dir",
            str(folder),
            "--out",
            str(tmp_path / "runs"),
            *TINY,
        ]
    )
    check = results.load_json(out / "depth_scaled-none" / "initcheck.json")
    assert check["networks"] == 3 and check["batch"] == 16
    assert (out / "initcheck.png").is_file()
    assert not (out / "depth_scaled-none" / "checkpoints").exists()


@pytest.mark.slow
def test_inits_preset_reports_accuracy_next_to_the_predictions(tmp_path):
    folder, *_ = write_cifar_folder(tmp_path / "data", per_batch=16, test=32)
    setups = ["skipinit-none", "fixup-k2", "weight_norm-k2", "risotto"]
    assert set(setups) <= set(load_script("train_cifar").PRESETS["inits"]["setups"])
    out, printed = run_script(
        "train_cifar",
        [
            "--preset",
            "inits",
            "--setups",
            *setups,
            "--epochs",
            "1",
            "--seeds",
            "2",
            "--data-dir",
            str(folder),
            "--out",
            str(tmp_path / "runs"),
            *TINY,
        ]
    )
    summary = {s["setup"]: s for s in results.load_json(out / "summary.json")["summary"]}
    assert set(summary) == set(setups)
    # Fixup and SkipInit start as the identity: no growth, a perfectly isometric Jacobian.
    for name in ("skipinit-none", "fixup-k2"):
        assert summary[name]["predicted_forward_log10"] == 0.0
        assert summary[name]["predicted_jacobian_sd_log"] == 0.0
    # Arpit et al.: (1 + 1/B)^B over the B = 2 blocks, forward and backward.
    wn = summary["weight_norm-k2"]
    assert abs(wn["predicted_forward_log10"] - 2 * np.log10(1.5)) < 1e-9
    assert abs(wn["predicted_backward_log10"] - 2 * np.log10(1.5)) < 1e-9
    assert wn["predicted_jacobian_sd_log"] > 0.01
    # RISOTTO: exact isometry by construction, and no recursion to check it against.
    assert summary["risotto"]["predicted_forward_log10"] == 0.0
    assert summary["risotto"]["predicted_jacobian_sd_log"] < 1e-5
    assert not (out / "risotto" / "initcheck.json").exists()
    assert (out / "fixup-k2" / "initcheck.json").is_file()
    # Fixup's zero head: no gradient reaches a block at init, and the summary says so where
    # its backward number would be (undefined: NaN, stored as "nan" and not as a bare null);
    # the others carry no note.
    fixup = summary["fixup-k2"]
    assert fixup["log10_m2_dz_1_note"] == initcheck.NO_GRADIENT
    assert np.isnan(fixup["log10_m2_dz_1_measured"])
    assert np.isfinite(fixup["log10_m2_z_L_measured"])
    check = results.load_json(out / "fixup-k2" / "initcheck.json")
    assert check["summary"]["m2_dz"]["note"] == initcheck.NO_GRADIENT
    assert check["statistics"]["var_dw"]["note"] == initcheck.NO_GRADIENT
    assert check["statistics"]["m2_z"]["note"] is None
    for name in ("skipinit-none", "weight_norm-k2", "risotto"):
        assert summary[name]["log10_m2_dz_1_note"] is None
    assert initcheck.NO_GRADIENT in printed  # printed with the summary
    assert all(s["val_accuracy_epoch1_mean"] is not None for s in summary.values())
    assert (out / "inits.png").is_file()
    row = results.load_json(out / "fixup-k2" / "config.json")
    assert row["train"]["model"]["block"] == "relu-none-residual-k2-linear"
