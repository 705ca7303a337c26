"""The same fine-tuning under `tf.distribute.MirroredStrategy`: every GPU of this
host (or, here, the CPU split into two logical devices), a global batch of 16.

    python examples/fit_imdb_mirrored.py [TRAINING_REVIEWS] [OUTPUT_DIR]   # defaults: all 25,000, runs/fit_mirrored
"""

import os
import sys

import keras
import tensorflow as tf

import kerasbert

reviews = int(sys.argv[1]) if len(sys.argv) > 1 else 0  # 0: all of them
output = sys.argv[2] if len(sys.argv) > 2 else "runs/fit_mirrored"
if not tf.config.list_physical_devices("GPU"):  # no GPU: mirror over two logical CPU devices
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
strategy = tf.distribute.MirroredStrategy()
keras.utils.set_random_seed(42)
train, test, class_names = kerasbert.read_tfds("imdb_reviews", os.environ.get("TFDS_DATA_DIR"))
train, validation = train.sample(reviews, seed=42).split(0.1, seed=42)

with strategy.scope():  # the model, its variables and the optimizer's live on every replica
    preset = kerasbert.resolve_preset(kerasbert.DEFAULT_PRESET)
    classifier, preprocessor = kerasbert.build_classifier(preset, None, 256, class_names=class_names)
    classifier.compile(optimizer=kerasbert.adamw_with_warmup(5e-5, total_steps=2 * -(-len(train) // 16)))
# The datasets outside the scope: Keras splits each global batch of 16 over the replicas.
classifier.fit(kerasbert.training_dataset(train, preprocessor, batch_size=16, seed=42), epochs=2,
               validation_data=kerasbert.evaluation_dataset(validation.sorted_by_length(), preprocessor, 64),
               callbacks=[kerasbert.TrainingTensorBoard(os.path.join(output, "logs"), batch_size=16, update_freq=20)])
classifier.preprocessor = preprocessor
classifier.save(os.path.join(output, "model.keras"))
print(f"{strategy.num_replicas_in_sync} replicas;", keras.saving.load_model(os.path.join(output, "model.keras")).class_names)
