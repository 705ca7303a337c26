"""The `tf.data` pipelines that feed texts to the model, and the tensorflow-datasets readers.

Texts come from tensorflow-datasets (`read_tfds`), an aclImdb folder or
tarball, or CSV/JSONL files (`kerasbert.texts`); `kerasbert.splits` makes a
run's splits of them. Tokenization happens in the `tf.data` pipeline, not in
the model: the model receives ready int32 tensors, which `tf.distribute` can
split across replicas, and tokenizing the next batches overlaps with training
on the current one.

Example:

>>> train, test, class_names = read_tfds("imdb_reviews", data_dir="../shared/data/tensorflow_datasets")
>>> len(train), len(test), class_names
(25000, 25000, ['neg', 'pos'])
"""

import functools
import os

import numpy as np
import tensorflow as tf

from kerasbert.errors import KerasbertError, first_line
from kerasbert.texts import LabeledTexts

TOKEN_INPUTS = ("token_ids", "segment_ids", "padding_mask")
# Batches are padded to a multiple of this many tokens, which bounds the number
# of distinct shapes (and so of retraced or XLA-recompiled train steps).
PAD_TO_MULTIPLE_OF = 16
# With length bucketing, reviews are sorted by length inside windows of this
# many batches, so a batch holds reviews of similar length yet the order of
# batches stays random.
BUCKET_WINDOW_BATCHES = 64


# --- tensorflow-datasets ---------------------------------------------------


def read_tfds(name, data_dir=None):
    """(train, test, class names) of a prepared tfds dataset in `data_dir` (default: tfds' own,
    `$TFDS_DATA_DIR` if set); nothing is downloaded."""
    train, test = (read_tfds_split(name, data_dir or None, split) for split in ("train", "test"))
    return train, test, tfds_class_names(name, data_dir)


def tfds_class_names(name, data_dir=None):
    builder = prepared_builder(name, data_dir)
    return builder.info.features[builder.info.supervised_keys[1]].names


@functools.lru_cache(maxsize=4)
def read_tfds_split(name, data_dir, split):
    """One split of a prepared tfds dataset as `LabeledTexts` (label -1 where it has none,
    as in imdb_reviews' `unsupervised`). The one place a tfds split is read.

    Cached: a sweep or a test session reads the same splits many times.
    """
    builder = prepared_builder(name, data_dir)
    try:
        return labeled_texts_from(supervised_split(builder, split))
    except tf.errors.OpError as error:  # a damaged shard: DataLossError, or a record that does not parse
        raise KerasbertError(f"{name} in {builder.data_dir} cannot be read ({first_line(error)}); "
                             "prepare it again with tfds or point `data_dir` at a good copy") from None


def supervised_split(builder, split):
    """(text, label) rows of one split of a prepared tfds `builder`, in file order, as a `tf.data.Dataset`."""
    if split not in builder.info.splits:
        raise KerasbertError(f"{builder.name} in {builder.data_dir} has no {split!r} split "
                             f"(it has {', '.join(sorted(builder.info.splits))})")
    return builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)


def prepared_builder(name, data_dir=None):
    """The tfds builder of a prepared dataset with (text, label) supervised keys; nothing is downloaded."""
    import tensorflow_datasets as tfds

    if data_dir and not os.path.isdir(data_dir):
        raise KerasbertError(f"data directory {data_dir} does not exist (set `data_dir` or TFDS_DATA_DIR)")
    try:
        builder = tfds.builder(name, data_dir=data_dir or None)
    except tfds.core.registered.DatasetNotFoundError:
        raise KerasbertError(f"unknown tensorflow-datasets dataset {name!r}") from None
    if not builder.is_prepared():
        raise KerasbertError(
            f"no prepared {name} in {builder.data_dir} (data directory {data_dir or 'tfds default'}); "
            "prepare it with tfds or point `data_dir` at a copy"
        )
    if builder.info.supervised_keys is None:
        raise KerasbertError(f"{name} has no supervised (text, label) keys")
    return builder


def load_unlabeled_texts(dataset="imdb_reviews", data_dir=None, splits=("unsupervised", "train"),
                         validation_split=0.1, seed=0, max_texts=0):
    """The texts to adapt a preset on: the `splits` of a prepared tfds dataset, without the
    validation reviews that `load_splits` with the same `validation_split` and `seed` holds
    out of train (so validation still scores reviews the model never read), and never the
    test split. `max_texts` takes a seeded subset (0: all)."""
    if "test" in splits:
        raise KerasbertError("adapting on the test split would leak it into every test score; "
                             "adapt on unlabeled and training texts")
    parts = []
    for split in splits:
        texts = read_tfds_split(dataset, data_dir or None, split)
        if split == "train":
            texts = texts.split(validation_split, seed)[0]
        parts.append(texts.texts)
    texts = np.concatenate(parts) if parts else np.array([], dtype=object)
    if not len(texts):
        raise KerasbertError(f"no texts to adapt on in {dataset} ({', '.join(splits) or 'no splits'})")
    return LabeledTexts(texts, np.full(len(texts), -1, np.int32)).sample(max_texts, seed)


def labeled_texts_from(dataset):
    texts, labels = [], []
    for text_batch, label_batch in dataset.batch(4096).with_options(pipeline_options()).as_numpy_iterator():
        texts.extend(text.decode("utf-8") for text in text_batch)
        labels.append(label_batch)
    return LabeledTexts(np.array(texts, dtype=object), np.concatenate(labels).astype("int32"))


# --- tf.data pipelines -----------------------------------------------------


def training_dataset(data, preprocessor, batch_size, seed, length_bucketing=True, first_epoch=0, skip_batches=0,
                     length_warmup=None):
    """Shuffled, batched, tokenized training batches, in a new order on every pass.

    Each pass over the dataset is one epoch (Keras starts one per epoch): the
    k-th pass yields epoch `first_epoch + k`, whose order is a function of
    (seed, epoch) alone. So `fit(dataset, epochs=3)` trains on three orders,
    and a rerun with the same seed on the same three. `skip_batches` leaves
    out the first batches of every pass: a run killed in the middle of epoch
    E finishes it on `training_dataset(..., first_epoch=E, skip_batches=done)`
    and goes on with `first_epoch=E + 1`, seeing exactly the batches an
    uninterrupted run would. With several workers every worker builds the
    same order and keeps its share of the batches (DATA sharding). A
    `preprocessing.LengthWarmup` tokenizes the run's first steps shorter.

    Build it outside a `strategy.scope()`: it counts its passes in a variable.
    """
    texts, labels = tf.constant(list(data.texts), dtype=tf.string), tf.constant(data.labels)
    count, lengths = len(data), tf.strings.length(texts)

    def epoch_batches(epoch):
        # Stateless shuffles: the order depends on (seed, epoch) only, never on a global seed.
        order = tf.random.experimental.stateless_shuffle(tf.range(count), seed=tf.stack([seed, 2 * epoch]))
        starts = tf.range(0, count, batch_size)
        if length_bucketing:
            order = sorted_within_windows(order, lengths, batch_size * BUCKET_WINDOW_BATCHES)
            starts = tf.random.experimental.stateless_shuffle(starts, seed=tf.stack([seed, 2 * epoch + 1]))
        dataset = tf.data.Dataset.from_tensor_slices(starts).skip(skip_batches)  # skipping costs nothing here
        return dataset.map(lambda start: (tf.gather(texts, order[start:start + batch_size]),
                                          tf.gather(labels, order[start:start + batch_size])))

    dataset = each_pass_an_epoch(epoch_batches, first_epoch, length_warmup, skip_batches)
    # Keras reads the number of batches once, for every epoch: its progress bar and epoch ends need it.
    batches = max(-(-len(data) // batch_size) - skip_batches, 0)
    return tokenized(dataset.apply(tf.data.experimental.assert_cardinality(batches)), preprocessor, length_bucketing,
                     length_warmup)


def each_pass_an_epoch(epoch_batches, first_epoch=0, length_warmup=None, skip_batches=0):
    """A dataset whose k-th pass (Keras starts one per epoch) yields `epoch_batches(first_epoch + k)`;
    with a `preprocessing.LengthWarmup`, each batch also says whether it is one of the run's short steps (the
    passes' batches, after the first `skip_batches`, are the epoch's steps in order)."""
    with tf.device("/cpu:0"):
        passes_started = tf.Variable(first_epoch - 1, dtype=tf.int64, trainable=False, name="passes_started")
    if length_warmup is None:
        each_epoch = epoch_batches
    else:
        def each_epoch(epoch):
            return epoch_batches(epoch).enumerate(skip_batches).map(
                lambda step, batch: (*batch, length_warmup.is_short(epoch, step)))
    return tf.data.Dataset.from_tensors(0).map(lambda _: passes_started.assign_add(1)).flat_map(each_epoch)


def evaluation_dataset(data, preprocessor, batch_size, length_bucketing=True):
    """Batched, tokenized batches in the order of `data` (sort it first to bucket)."""
    dataset = tf.data.Dataset.from_tensor_slices((list(data.texts), data.labels))
    return tokenized(dataset.batch(batch_size), preprocessor, length_bucketing)


def sorted_within_windows(order, lengths, window):
    """`order` with each run of `window` consecutive examples sorted by length, so
    a batch holds reviews of similar length while the windows stay random."""
    lengths = tf.cast(tf.gather(lengths, order), tf.int64)
    windows = tf.cast(tf.range(tf.size(order)) // window, tf.int64)
    return tf.gather(order, tf.argsort(windows * (tf.reduce_max(lengths) + 1) + lengths, stable=True))


def tokenized(dataset, preprocessor, trim, length_warmup=None):
    """Batches of (texts, labels), or with a `preprocessing.LengthWarmup` (texts, labels, short), tokenized by
    `preprocessor` (a `ReviewPreprocessor` for the warm-up), padding trimmed if `trim`."""
    def preprocess(texts, labels, short=None):
        if short is None:
            features = preprocessor(texts)
        else:
            features = tf.cond(short, lambda: preprocessor.tokenize_and_pack(texts, length_warmup.length),
                               lambda: preprocessor.tokenize_and_pack(texts))
        return (trim_padding(features) if trim else features), labels

    options = pipeline_options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    # Two prefetch buffers, as when KerasHub's fit mapped its own (no-op) stage over these batches:
    # with autotuning off each buffer grows on its own, and one alone trained about 3% slower.
    dataset = dataset.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)


def pipeline_options():
    """tf.data options for every pipeline here: autotuning off.

    Autotuning gives each iterator a model thread that sleeps between tuning
    rounds (10 ms, doubling up to a minute). Dropping the iterator, which `fit`,
    `evaluate` and `predict` do when the data runs out, cancels that thread and
    waits for it. TensorFlow wakes the thread before it marks the cancellation
    done, so the thread can see "not cancelled" and sleep on to its next round:
    the CPU idles for up to a minute (7-13 s after the benchmark's 30 s epochs,
    `benchmarks/iterator_teardown.py`). Without autotuning, AUTOTUNE parallelism
    is one call per core and prefetching grows its own buffer, plenty for tokenizing.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return options


def trim_padding(features):
    """Cut a batch's padding columns down to its longest sequence (rounded up)."""
    longest = tf.reduce_max(tf.reduce_sum(tf.cast(features["padding_mask"], tf.int32), axis=1))
    width = tf.shape(features["token_ids"])[1]
    keep = tf.minimum(width, -(-longest // PAD_TO_MULTIPLE_OF) * PAD_TO_MULTIPLE_OF)
    return {name: value[:, :keep] for name, value in features.items()}


# --- what a model is fed -------------------------------------------------


def batch_count(dataset):
    """The batches of a dataset or distributed dataset (0 when unknown or infinite)."""
    cardinality = dataset.cardinality() if callable(dataset.cardinality) else dataset.cardinality
    return max(int(cardinality), 0)


def is_texts(x):
    """Whether `x` is raw texts: `LabeledTexts`, or a list or 1-D array of strings."""
    if isinstance(x, LabeledTexts):
        return True
    if isinstance(x, (list, tuple)):
        return bool(x) and all(isinstance(item, str) for item in x)
    return isinstance(x, np.ndarray) and x.ndim == 1 and x.dtype.kind in "OUS"


def is_token_features(x):
    return isinstance(x, dict) and set(TOKEN_INPUTS) <= set(x)


def is_token_dataset(x):
    """Whether `x` is a `tf.data.Dataset` of token-id features (alone, or with labels), or a
    distributed dataset (only batches ready for the model are distributed)."""
    if isinstance(x, tf.distribute.DistributedDataset):
        return True
    if not isinstance(x, tf.data.Dataset):
        return False
    spec = x.element_spec
    return is_token_features(spec[0] if isinstance(spec, tuple) else spec)


def as_labeled_texts(texts, labels=None):
    if isinstance(texts, LabeledTexts):
        return texts
    texts = np.asarray(list(texts), dtype=object)
    labels = np.zeros(len(texts), np.int32) if labels is None else np.asarray(labels, np.int32)
    if len(labels) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    return LabeledTexts(texts, labels)
