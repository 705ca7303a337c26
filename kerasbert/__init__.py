"""kerasbert: fine-tune a pre-trained BERT into a text classifier with Keras.

The training path, in reading order: `config` (every option), `presets`
(where the weights come from), `hardware` (what this machine computes fast,
and the defaults that follow), `data` (sources and `tf.data` pipelines),
`model` (preprocessor and classifier), `training` (optimizer, schedule,
callbacks, `fit` under a `tf.distribute` strategy), `progress` (phase lines,
throughput, the time estimate), `evaluation` (test metrics) and `rundir`
(what a run leaves on disk).
"""

__version__ = "0.1.0"
