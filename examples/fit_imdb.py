"""Fine-tune MiniLM on IMDB in your own Keras script: two epochs in one `fit`,
TensorBoard, save, reload with plain Keras, export for TF Serving.

    python examples/fit_imdb.py [TRAINING_REVIEWS] [OUTPUT_DIR]   # defaults: all 25,000, runs/fit_imdb
"""

import os
import sys

import keras

import kerasbert

reviews = int(sys.argv[1]) if len(sys.argv) > 1 else 0  # 0: all of them
output = sys.argv[2] if len(sys.argv) > 2 else "runs/fit_imdb"
keras.utils.set_random_seed(42)
train, test, class_names = kerasbert.read_tfds("imdb_reviews", os.environ.get("TFDS_DATA_DIR"))
train, validation = train.sample(reviews, seed=42).split(0.1, seed=42)  # tune on train only; test is for the end

preset = kerasbert.resolve_preset(kerasbert.DEFAULT_PRESET)  # the offline all-MiniLM-L6-v2 checkpoint
classifier, preprocessor = kerasbert.build_classifier(preset, None, 256, class_names=class_names)
classifier.compile(optimizer=kerasbert.adamw_with_warmup(5e-5, total_steps=2 * -(-len(train) // 16)))
classifier.fit(kerasbert.training_dataset(train, preprocessor, batch_size=16, seed=42), epochs=2,
               validation_data=kerasbert.evaluation_dataset(validation.sorted_by_length(), preprocessor, 64),
               callbacks=[kerasbert.TrainingTensorBoard(os.path.join(output, "logs"), batch_size=16, update_freq=20)])

classifier.preprocessor = preprocessor  # the saved model takes raw strings
classifier.save(os.path.join(output, "model.keras"))
reloaded = keras.saving.load_model(os.path.join(output, "model.keras"))
print(reloaded.class_names, keras.ops.softmax(reloaded.predict(["A wonderful film.", "Dreadful."], verbose=0)))
print("SavedModel:", kerasbert.export.saved_model(reloaded, os.path.join(output, "saved_model")))
