"""Adapting a BERT preset to a domain before fine-tuning: `ReviewMaskedLM` continues
its masked-language-model training on unlabeled text of the domain (domain- and
task-adaptive pre-training: Sun et al. 2019, Gururangan et al. 2020), and
`save_adapted_preset` writes the adapted backbone as a preset folder that
`TextClassifier.from_preset` loads like the one it came from.

It is KerasHub's `BertMaskedLM` (its `MaskedLMHead`, tied to the token
embeddings) fed the way `TextClassifier` is: raw texts shuffled anew each epoch,
batched by length and tokenized in `tf.data`, then masked by KerasHub's
`MaskedLMMaskGenerator` (15% of the tokens; of those 80% become [MASK], 10% a
random token, 10% stay). A checkpoint without a masked-LM head (MiniLM, a
sentence-transformers model) gets a new one: the warm-up of the learning rate
lets it settle before the backbone moves much.

The adapted preset is in Hugging Face format, the format of the offline
default: the same `config.json`, vocabulary and tokenizer settings as the
source (so the feed-forward activation and accent stripping carry over), a new
`model.safetensors` with the source's tensor names, and `kerasbert_preset.json`,
which records where the weights came from and the sha256 of every file;
`kerasbert.presets.resolve_preset` checks them before loading.

Example (a tiny random backbone; `ReviewMaskedLM.from_preset()` builds MiniLM's):

>>> backbone = keras_hub.models.BertBackbone(vocabulary_size=30, num_layers=1, num_heads=2, hidden_dim=8,
...                                          intermediate_dim=16, max_sequence_length=16)
>>> masked_lm = ReviewMaskedLM(backbone)
>>> inputs = {"token_ids": np.array([[2, 4, 5, 3]]), "segment_ids": np.zeros((1, 4), int),
...           "padding_mask": np.ones((1, 4), int), "mask_positions": np.array([[1, 2]])}
>>> masked_lm.predict(inputs, verbose=0).shape  # a distribution over the vocabulary at each masked position
(1, 2, 30)
"""

import json
import math
import os
import random
import shutil

import keras
import keras_hub
import numpy as np
import tensorflow as tf

from kerasbert import data, files
from kerasbert.backbone import set_feedforward_activation
from kerasbert.data import as_labeled_texts, is_texts
from kerasbert.errors import KerasbertError, first_line
from kerasbert.fused_layers import use_fused_layers
from kerasbert.hardware import choose_precision, detect_hardware
from kerasbert.optimizers import adamw_with_warmup, learn_training_length
from kerasbert.preprocessing import ReviewPreprocessor
from kerasbert.streaming import streamed_batches
from kerasbert.presets import (
    ADAPTED_PRESET_FILE,
    DEFAULT_PRESET,
    check_safetensors,
    hugging_face_activation,
    resolve_preset,
    safetensors_files,
    sha256_of,
)

MASK_RATE = 0.15
# The files of a Hugging Face BERT folder an adapted preset carries over from its source.
CARRIED_OVER = ("config.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


@keras.saving.register_keras_serializable(package="kerasbert")
class ReviewMaskedLM(keras_hub.models.BertMaskedLM):
    """KerasHub's BERT masked language model that trains on raw texts the way
    `TextClassifier` does, computes with fused layers, and saves its backbone as
    an adapted preset.

    `fit(texts)` masks `mask_rate` of each text's tokens afresh in every epoch and
    learns to predict them; `compile()` defaults to AdamW with linear warm-up and
    decay (`adamw_with_warmup(1e-4)`, its length learned from the first `fit`), the
    masked-token cross-entropy and its accuracy (`accuracy`, over masked tokens).

    Args:
        backbone: a `keras_hub.models.BertBackbone`.
        preprocessor: a `ReviewPreprocessor` (tokenize, truncate, pack), or None to
            feed masked token ids with `mask_positions`.
        mask_rate: the fraction of tokens to predict.
        fused_layers: compute with `kerasbert.fused_layers` (same weights).
        feedforward_activation: as in `TextClassifier` ("gelu" for a Hugging Face BERT).
        shuffle_seed: the seed of `fit`'s order of texts (None: drawn from Python's `random`).
        source_preset: the preset folder the backbone was loaded from; `save_adapted_preset`
            copies its configuration and vocabulary.
    """

    def __init__(self, backbone, preprocessor=None, mask_rate=MASK_RATE, fused_layers=True,
                 feedforward_activation=None, shuffle_seed=None, source_preset=None, **kwargs):
        super().__init__(backbone, preprocessor=preprocessor, **kwargs)
        if not 0 < mask_rate < 1:
            raise ValueError(f"mask_rate must be in (0, 1), got {mask_rate}")
        self.mask_rate, self.fused_layers, self.shuffle_seed = mask_rate, fused_layers, shuffle_seed
        self.feedforward_activation, self.source_preset = feedforward_activation, source_preset
        if fused_layers:
            use_fused_layers(self)
        if feedforward_activation:
            set_feedforward_activation(backbone, feedforward_activation)
        backbone.pooled_dense.trainable = False  # the masked LM never reads the pooled output

    @classmethod
    def from_preset(cls, preset=DEFAULT_PRESET, sequence_length=256, truncation="head", precision="auto",
                    backbone_dropout=None, **kwargs):
        """A masked LM on a preset's backbone (weights loaded, a new masked-LM head), with its
        `ReviewPreprocessor` attached, compiled. The arguments mean what they mean in
        `TextClassifier.from_preset`; `truncation` defaults to the head of a long text."""
        path = resolve_preset(preset)
        dtype = choose_precision(precision, detect_hardware() if precision == "auto" else None).policy
        backbone_options = {} if backbone_dropout is None else {"dropout": backbone_dropout}
        try:
            preprocessor = ReviewPreprocessor.from_preset(path, sequence_length=sequence_length, truncation=truncation)
            backbone = keras_hub.models.BertBackbone.from_preset(path, dtype=dtype, **backbone_options)
        except (OSError, ValueError, KeyError) as error:
            raise KerasbertError(f"cannot load preset {preset}: {first_line(error)}") from None
        if sequence_length > backbone.max_sequence_length:
            raise KerasbertError(f"`sequence_length` {sequence_length} exceeds the model's "
                                 f"{backbone.max_sequence_length} positions")
        return cls(backbone, preprocessor=preprocessor, feedforward_activation=hugging_face_activation(path),
                   source_preset=path, dtype=dtype, **kwargs)

    def compile(self, optimizer="auto", loss="auto", *, weighted_metrics="auto", **kwargs):
        if optimizer == "auto":
            optimizer = adamw_with_warmup(1e-4)
        if loss == "auto":
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        if weighted_metrics == "auto":
            weighted_metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        super().compile(optimizer, loss, weighted_metrics=weighted_metrics, **kwargs)

    def fit(self, x=None, y=None, batch_size=None, epochs=1, initial_epoch=0, shuffle=True, **kwargs):
        """Keras' `fit`. Raw texts (a list or array of strings, or `LabeledTexts`, whose labels
        are ignored) become `masked_batches`; a dataset of masked batches is fed as it is."""
        if is_texts(x):
            x, y = self.masked_batches(x, batch_size or 32, first_epoch=initial_epoch), None
            batch_size = None
        if isinstance(x, tf.data.Dataset):
            shuffle = False  # a dataset orders itself; Keras would only warn that it ignores `shuffle`
            learn_training_length(self.optimizer, epochs * max(int(x.cardinality()), 0))
        return keras.Model.fit(self, x=x, y=y, batch_size=batch_size, epochs=epochs, initial_epoch=initial_epoch,
                               shuffle=shuffle, **kwargs)

    def masked_batches(self, texts, batch_size=32, first_epoch=0, skip_batches=0, batches_per_epoch=None):
        """Training batches of `texts` (shuffled anew every epoch, by length, tokenized), each
        masked afresh: (features with `mask_positions`, masked token ids, their weights).
        `first_epoch` and `skip_batches` resume an interrupted pass, as in
        `kerasbert.data.training_dataset`. `texts` may be a `tf.data.Dataset` of (text, label)
        rows, streamed (`kerasbert.streaming.streamed_batches`; `batches_per_epoch` from its `survey`)."""
        if self.preprocessor is None:
            raise ValueError("raw texts need a preprocessor")
        if isinstance(texts, tf.data.Dataset):
            batches = streamed_batches(texts, self.preprocessor, batch_size, self.drawn_shuffle_seed(),
                                       batches_per_epoch=batches_per_epoch, first_epoch=first_epoch,
                                       skip_batches=skip_batches)
        else:
            batches = data.training_dataset(as_labeled_texts(texts), self.preprocessor, batch_size,
                                            self.drawn_shuffle_seed(), first_epoch=first_epoch,
                                            skip_batches=skip_batches)
        masker = self.mask_generator()

        def mask(features, labels):
            masked = masker(features["token_ids"])
            inputs = {**features, "token_ids": tf.cast(masked["token_ids"], tf.int32),
                      "mask_positions": tf.cast(masked["mask_positions"], tf.int32)}
            return inputs, tf.cast(masked["mask_ids"], tf.int32), tf.cast(masked["mask_weights"], tf.float32)

        return batches.map(mask, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

    def mask_generator(self):
        tokenizer = self.preprocessor.tokenizer
        return keras_hub.layers.MaskedLMMaskGenerator(
            vocabulary_size=tokenizer.vocabulary_size(), mask_selection_rate=self.mask_rate,
            mask_token_id=tokenizer.mask_token_id,
            mask_selection_length=math.ceil(self.mask_rate * self.preprocessor.sequence_length),
            unselectable_token_ids=[tokenizer.start_token_id, tokenizer.end_token_id, tokenizer.pad_token_id])

    def drawn_shuffle_seed(self):
        if self.shuffle_seed is None:
            self.shuffle_seed = random.randrange(2**31)
        return self.shuffle_seed

    def save_adapted_preset(self, folder, details=None, overwrite=False):
        """Write the backbone as a preset folder (see `save_adapted_preset`)."""
        if not self.source_preset:
            raise ValueError("the source preset is unknown: build with from_preset, or pass source_preset")
        save_adapted_preset(self.backbone, self.source_preset, folder, details, overwrite)

    def get_config(self):
        return {**super().get_config(), "mask_rate": self.mask_rate, "fused_layers": self.fused_layers,
                "feedforward_activation": self.feedforward_activation, "shuffle_seed": self.shuffle_seed,
                "source_preset": self.source_preset}


def save_adapted_preset(backbone, source_preset, folder, details=None, overwrite=False):
    """Write `backbone` as a Hugging Face BERT folder beside its `source_preset` (a local
    Hugging Face folder): the source's configuration and vocabulary, the backbone's
    weights under the source's tensor names, and `kerasbert_preset.json` with `details`
    (what it was adapted on, how) and every file's sha256. Written in a temporary folder
    and renamed into place, so `folder` is a whole preset or none."""
    source = resolve_preset(source_preset)
    names = safetensors_files(source)
    if names != ["model.safetensors"]:
        raise KerasbertError(f"preset {source_preset}: an adapted preset needs a local Hugging Face folder with "
                             "one model.safetensors")
    files.check_free(folder, overwrite)
    parent = os.path.dirname(os.path.abspath(folder))
    os.makedirs(parent, exist_ok=True)
    staged = files.staging_directory(parent, os.path.basename(folder), overwrite=True)[0]
    try:
        for name in CARRIED_OVER:
            if os.path.isfile(os.path.join(source, name)):
                shutil.copyfile(os.path.join(source, name), os.path.join(staged, name))
        tensors = hugging_face_tensors(backbone, os.path.join(source, "model.safetensors"))
        from safetensors.numpy import save_file

        save_file(tensors, os.path.join(staged, "model.safetensors"), metadata={"format": "pt"})
        digests = {name: sha256_of(os.path.join(staged, name)) for name in sorted(os.listdir(staged))}
        record = {"source": os.path.abspath(source), **(details or {}), "sha256": digests}
        with open(os.path.join(staged, ADAPTED_PRESET_FILE), "w") as file:
            json.dump(record, file, indent=2)
        files.publish_directory(staged, folder, overwrite)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


def hugging_face_tensors(backbone, source_weights):
    """The backbone's weights as a Hugging Face `BertModel` state dict (float32), with the
    tensor names and naming conventions of `source_weights` (a safetensors file); the
    source's tensors the backbone has no weight for (e.g. `position_ids`) are kept."""
    from safetensors.numpy import load_file

    check_safetensors(source_weights)
    source = load_file(source_weights)
    prefix = "bert." if "bert.embeddings.word_embeddings.weight" in source else ""
    gamma, beta = (("gamma", "beta") if f"{prefix}embeddings.LayerNorm.gamma" in source else ("weight", "bias"))
    tensors = dict(source)
    ported = dict(weight_map(backbone, gamma, beta))
    missing = [name for name in ported if prefix + name not in source]
    if missing:
        raise KerasbertError(f"{source_weights} has no tensor {missing[0]}: not a BERT of this architecture")
    for name, value in ported.items():
        expected = source[prefix + name].shape
        if value.shape != expected:
            raise KerasbertError(f"{name}: the backbone's weight is {value.shape}, the source's {expected}")
        tensors[prefix + name] = np.ascontiguousarray(value, dtype=np.float32)
    return tensors


def weight_map(backbone, gamma="weight", beta="bias"):
    """(Hugging Face name, value) for every weight of a KerasHub `BertBackbone`: the inverse
    of KerasHub's Hugging Face converter (`keras_hub/src/utils/transformers/convert_bert.py`)."""
    def value(variable):
        return keras.ops.convert_to_numpy(variable).astype(np.float32)

    def dense(layer):  # Keras [in, ...out] kernels are Hugging Face's [out, in] transposed
        kernel = value(layer.kernel)
        return kernel.reshape(kernel.shape[0], -1).T, value(layer.bias).reshape(-1)

    def norm(layer, name):
        return [(f"{name}.LayerNorm.{gamma}", value(layer.gamma)), (f"{name}.LayerNorm.{beta}", value(layer.beta))]

    yield "embeddings.word_embeddings.weight", value(backbone.token_embedding.embeddings)
    yield "embeddings.position_embeddings.weight", value(backbone.position_embedding.position_embeddings)
    yield "embeddings.token_type_embeddings.weight", value(backbone.segment_embedding.embeddings)
    yield from norm(backbone.embeddings_layer_norm, "embeddings")
    for index, block in enumerate(backbone.transformer_layers):
        attention, name = block._self_attention_layer, f"encoder.layer.{index}"
        projections = {"attention.self.query": attention.query_dense, "attention.self.key": attention.key_dense,
                       "attention.self.value": attention.value_dense}
        for part, layer in projections.items():
            kernel, bias = dense(layer)
            yield f"{name}.{part}.weight", kernel
            yield f"{name}.{part}.bias", bias
        output_kernel = value(attention.output_dense.kernel)  # [heads, head_dim, hidden]
        yield f"{name}.attention.output.dense.weight", output_kernel.reshape(-1, output_kernel.shape[-1]).T
        yield f"{name}.attention.output.dense.bias", value(attention.output_dense.bias)
        yield from norm(block._self_attention_layer_norm, f"{name}.attention.output")
        for part, layer in (("intermediate.dense", block._feedforward_intermediate_dense),
                            ("output.dense", block._feedforward_output_dense)):
            yield f"{name}.{part}.weight", value(layer.kernel).T
            yield f"{name}.{part}.bias", value(layer.bias)
        yield from norm(block._feedforward_layer_norm, f"{name}.output")
    yield "pooler.dense.weight", value(backbone.pooled_dense.kernel).T
    yield "pooler.dense.bias", value(backbone.pooled_dense.bias)
