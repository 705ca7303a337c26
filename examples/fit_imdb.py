"""Fine-tune MiniLM on IMDB in your own Keras script: two epochs in one `fit`, TensorBoard,
save, reload with plain Keras (compiled, optimizer state included), export for TF Serving.

    python examples/fit_imdb.py [TRAINING_REVIEWS OUTPUT_DIR]   # defaults: all 25,000, runs/fit_imdb

Reads tfds `imdb_reviews` from $TFDS_DATA_DIR (`make` points it at ../shared/data).
"""

import sys

# kerasbert before Keras: on AVX2 CPUs it turns on TensorFlow's oneDNN kernels
import kerasbert.deploy

import keras

reviews, output = (int(sys.argv[1]), sys.argv[2]) if len(sys.argv) > 2 else (0, "runs/fit_imdb")
train, validation = kerasbert.read_tfds("imdb_reviews")[0].sample(reviews, seed=42).split(0.1, seed=42)
classifier = kerasbert.TextClassifier.from_preset("all_minilm_l6_v2_offline", class_names=["neg", "pos"])
logs = kerasbert.TrainingTensorBoard(f"{output}/logs")
classifier.fit(train, batch_size=16, epochs=2, validation_data=validation, callbacks=[logs])
classifier.save(f"{output}/model.keras")
reloaded = keras.saving.load_model(f"{output}/model.keras")
print(reloaded.class_names, reloaded.classify(["A wonderful film.", "Dreadful."]))
print("SavedModel:", kerasbert.deploy.saved_model(reloaded, f"{output}/saved_model"))
