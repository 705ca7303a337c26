"""kerasbert: fine-tune a pre-trained BERT into a text classifier with Keras.

The training path, in reading order: `config` (every option), `presets`
(where the weights come from), `data` (sources and `tf.data` pipelines),
`model` (preprocessor and classifier), `training` (optimizer, schedule,
callbacks, `fit` under a `tf.distribute` strategy), `evaluation` (test
metrics) and `rundir` (what a run leaves on disk).
"""

__version__ = "0.1.0"
