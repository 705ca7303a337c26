"""The same fine-tuning under `tf.distribute.MirroredStrategy`: every GPU of this host (or,
here, the CPU split into two logical devices), a global batch of 16.

    python examples/fit_imdb_mirrored.py [TRAINING_REVIEWS OUTPUT_DIR]   # defaults: all 25,000, runs/fit_mirrored
"""

import sys

# kerasbert before TensorFlow: on AVX2 CPUs it turns on TensorFlow's oneDNN kernels
import kerasbert

import keras
import tensorflow as tf

reviews, output = (int(sys.argv[1]), sys.argv[2]) if len(sys.argv) > 2 else (0, "runs/fit_mirrored")
if not tf.config.list_physical_devices("GPU"):  # no GPU: mirror over two logical CPU devices
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
strategy = tf.distribute.MirroredStrategy()
train, validation = kerasbert.read_tfds("imdb_reviews")[0].sample(reviews, seed=42).split(0.1, seed=42)
with strategy.scope():  # the model, its variables and the optimizer's live on every replica
    classifier = kerasbert.TextClassifier.from_preset("all_minilm_l6_v2_offline", class_names=["neg", "pos"])
# fit splits each global batch of 16 over the replicas.
classifier.fit(train, batch_size=16, epochs=2, validation_data=validation,
               callbacks=[kerasbert.TrainingTensorBoard(f"{output}/logs")])
classifier.save(f"{output}/model.keras")
print(f"{strategy.num_replicas_in_sync} replicas;", keras.saving.load_model(f"{output}/model.keras").class_names)
