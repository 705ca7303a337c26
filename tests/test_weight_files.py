import h5py
import keras
import keras_hub
import numpy as np
import pytest

from kerasbert.fused_layers import FUSED_CLASSES, uses_fused_layers
from kerasbert.job.resume import save_weights
from kerasbert.model import TextClassifier, load_classifier, save_classifier
from kerasbert.weight_files import load_weights, names_as_saved, saved_layer_names

FEATURES = {"token_ids": np.array([[2, 5, 7, 3], [2, 9, 3, 0]]), "segment_ids": np.zeros((2, 4), int),
            "padding_mask": np.array([[1, 1, 1, 1], [1, 1, 1, 0]])}


def layer_weight_paths(path):
    paths = []
    with h5py.File(path, "r") as store:
        store.visit(lambda name: paths.append(name) if name.startswith("layers/") and name[-1].isdigit() else None)
    return set(paths)


def tiny_backbone():
    return keras_hub.models.BertBackbone(vocabulary_size=30, num_layers=2, num_heads=2, hidden_dim=8,
                                         intermediate_dim=16, max_sequence_length=16)


def test_a_fused_classifier_saves_its_weights_as_an_unfused_one_and_keras_hubs_do(tmp_path):
    keras.utils.set_random_seed(0)
    fused = TextClassifier(tiny_backbone(), class_names=["neg", "pos"])
    plain = TextClassifier(tiny_backbone(), class_names=["neg", "pos"], fused_layers=False)
    hubs = keras_hub.models.BertTextClassifier(tiny_backbone(), num_classes=2)
    assert uses_fused_layers(fused) and not uses_fused_layers(plain)
    paths = []
    for index, model in enumerate((fused, plain, hubs)):
        model.save_weights(tmp_path / f"{index}.weights.h5")
        paths.append(layer_weight_paths(tmp_path / f"{index}.weights.h5"))
    assert paths[0] == paths[1] == paths[2]
    segments = saved_layer_names(tmp_path / "0.weights.h5")
    assert {"transformer_encoder", "transformer_encoder_1", "layer_normalization", "dense"} <= segments
    assert not any(segment.startswith("fused") for segment in segments)
    # The unfused classifier's weights load into the fused one: the same logits.
    load_weights(fused, tmp_path / "1.weights.h5")
    np.testing.assert_allclose(fused.predict(FEATURES, verbose=0), plain.predict(FEATURES, verbose=0), atol=1e-5)


@pytest.mark.parametrize("own_names", [list(FUSED_CLASSES.values()), [FUSED_CLASSES[keras.layers.Dense]]])
def test_files_written_under_the_fused_classes_own_names_still_load(tmp_path, own_names):
    """kerasbert before 2026-12-06 named weights by the fused classes (all of them, or fewer in older versions)."""
    keras.utils.set_random_seed(1)
    classifier = TextClassifier(tiny_backbone(), class_names=["neg", "pos"])
    classifier.compile()
    classifier.optimizer.build(classifier.trainable_variables)
    for fused in own_names:
        fused.__name__ = fused.__qualname__
    try:
        save_classifier(classifier, str(tmp_path / "old.keras"))
        save_weights(classifier, str(tmp_path / "old.weights.h5"), "the test's weights")
    finally:
        for base, fused in FUSED_CLASSES.items():
            fused.__name__ = base.__name__
    assert "fused_dense" in saved_layer_names(tmp_path / "old.keras")
    with pytest.raises(ValueError):  # what plain Keras makes of such a file
        keras.saving.load_model(tmp_path / "old.keras")
    expected = classifier.predict(FEATURES, verbose=0)
    np.testing.assert_allclose(load_classifier(str(tmp_path / "old.keras")).predict(FEATURES, verbose=0), expected,
                               atol=1e-6)
    other = TextClassifier(tiny_backbone(), class_names=["neg", "pos"])
    other.optimizer.build(other.trainable_variables)  # so the file's optimizer state loads too
    load_weights(other, tmp_path / "old.weights.h5")
    np.testing.assert_allclose(other.predict(FEATURES, verbose=0), expected, atol=1e-6)
    assert [fused.__name__ for fused in FUSED_CLASSES.values()] == [base.__name__ for base in FUSED_CLASSES]


def test_names_as_saved_leaves_the_names_alone_for_a_missing_or_foreign_file(tmp_path):
    (tmp_path / "notes.keras").write_text("not a zip")
    for path in (tmp_path / "missing.keras", tmp_path / "notes.keras"):
        with names_as_saved(path):
            assert [fused.__name__ for fused in FUSED_CLASSES.values()] == [base.__name__ for base in FUSED_CLASSES]
