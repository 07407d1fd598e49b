"""Keras 3 facts the book states (troubleshooting page, chapter 2), checked against the installed Keras."""

import pytest

keras = pytest.importorskip("keras")

import companion  # noqa: E402,F401  (quiet TensorFlow before it loads)


@pytest.fixture
def model():
    return keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])


@pytest.mark.parametrize("name", ["w.h5", "ckpt"])
def test_save_weights_needs_the_weights_h5_suffix(model, tmp_path, name):
    with pytest.raises(ValueError, match=r"must end in `\.weights\.h5`"):
        model.save_weights(str(tmp_path / name))
    model.save_weights(str(tmp_path / "w.weights.h5"))
    assert (tmp_path / "w.weights.h5").is_file()


def test_model_checkpoint_weights_only_needs_the_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"must end in `\.weights\.h5`"):
        keras.callbacks.ModelCheckpoint(str(tmp_path / "w.{epoch:02d}.h5"), save_weights_only=True)
    keras.callbacks.ModelCheckpoint(str(tmp_path / "w.{epoch:02d}.weights.h5"), save_weights_only=True)


def test_whole_model_saving_needs_a_file_extension(model, tmp_path):
    with pytest.raises(ValueError, match=r"\.keras"):
        model.save(str(tmp_path / "saved_model_dir"))
    model.save(str(tmp_path / "m.keras"))
    assert (tmp_path / "m.keras").is_file()


def test_metrics_reset_with_reset_state_only():
    metric = keras.metrics.Mean()
    assert hasattr(metric, "reset_state") and not hasattr(metric, "reset_states")


def test_tf_keras_is_keras_3():
    """The troubleshooting page: `tf.keras` is Keras 3 from TensorFlow 2.16 on."""
    tf = pytest.importorskip("tensorflow")
    assert tf.keras.version().startswith("3.") and tf.keras.Model is keras.Model
