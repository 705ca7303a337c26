"""`kerasbert adapt`: a preset's masked-language-model training continued on the
domain's unlabeled text (`kerasbert.adaptation`), run as a job like training:
progress lines and a time estimate, TensorBoard (masked-LM loss and accuracy) in
its run directory, a backup every N steps that the same command resumes from, and
the adapted preset written whole at the end.

    <run dir> (default runs/adapt-<name>)   config.json, logs/ (TensorBoard), backup/ (until done)
    <output>                                the adapted preset: what train.py --preset takes

Example (a minute on a 2-core CPU):

>>> from kerasbert.job.config import AdaptConfig
>>> adapt(AdaptConfig(data_dir="../shared/data/tensorflow_datasets", output="/tmp/adapted-example",
...                   run_dir="/tmp/adapt-example", max_texts=64, heldout_texts=16, max_seq_length=64,
...                   overwrite=True))
[kerasbert ...] on ...
'/tmp/adapted-example'
"""

import math
import os
import time

from kerasbert import data, distribution, files, streaming
from kerasbert.adaptation import ReviewMaskedLM
from kerasbert.errors import KerasbertError
from kerasbert.job import faults, resume, rundir
from kerasbert.job.training import ResumableJob, announce_machine
from kerasbert.optimizers import adamw_with_warmup
from kerasbert.presets import ADAPTED_PRESET_FILE, resolve_preset
from kerasbert.progress import minutes, phase
from kerasbert.splits import rows_in_memory, stream_unlabeled_texts


def adapt(config):
    """Adapt `config.preset` on unlabeled texts and write the preset to `config.output`;
    returns that folder. A killed run resumes from its backup when run again; a
    finished preset is replaced only with `overwrite`."""
    started = time.perf_counter()
    if os.path.isfile(os.path.join(config.output, ADAPTED_PRESET_FILE)) and not config.overwrite:
        raise KerasbertError(f"{config.output} holds an adapted preset already (train with --preset "
                             f"{config.output}; pass --overwrite to adapt again)")
    files.check_can_create(config.output, "--output folder")
    with faults.TerminationNotice() as notice:
        strategy = distribution.make_strategy(config.strategy, config.logical_cpu_devices)
        precision = announce_machine(strategy, config.mixed_precision)[1]
        phase(f"resolving preset {config.preset}")
        resolve_preset(config.preset)
        phase(f"{'streaming' if config.streaming else 'reading'} {config.splits} of {config.dataset}")
        texts, heldout, count, steps = texts_to_adapt_on(config)
        phase(f"{count} texts to adapt on, {len(heldout)} held out")
        run_dir = rundir.RunDirectory(config.run_directory())
        with run_dir.locked(), faults.ended_clearly(run_dir, distribution.cluster_task()):
            job = ResumableJob(config, run_dir, strategy, precision, notice, started, work="adapting")
            masked_lm, state = train_masked_lm(job, texts, heldout, count, steps)
            details = {"adapted_on": f"{config.dataset} {config.splits} ({count} texts)",
                       "config": config.to_dict(), "steps": state.global_step,
                       "masked_lm": state.history[-1] if state.history else {}}
            masked_lm.save_adapted_preset(config.output, details, overwrite=True)
            resume.Backup(run_dir.backup_dir).delete()
    phase(f"adapted preset written to {config.output} in {minutes(time.perf_counter() - started)}; "
          f"train on it with: python train.py --preset {config.output}")
    return config.output


def texts_to_adapt_on(config):
    """(texts, held-out texts, how many texts, steps per epoch): in memory, or streamed (the held-out
    texts the first ones, counted in one pass)."""
    if config.streaming:
        rows = stream_unlabeled_texts(config.dataset, config.data_dir, config.split_names(), config.validation_split,
                                      config.max_texts)
        heldout = rows_in_memory(rows.take(config.heldout_texts))
        rest = rows.skip(len(heldout))
        survey = streaming.survey(rest)
        return rest, heldout, survey.train, survey.batches_per_epoch(config.batch_size)
    texts = data.load_unlabeled_texts(config.dataset, config.data_dir, config.split_names(),
                                      config.validation_split, config.seed, config.max_texts)
    texts, heldout = texts.split(config.heldout_texts / len(texts) if len(texts) > config.heldout_texts else 0,
                                 config.seed)
    return texts, heldout, len(texts), math.ceil(len(texts) / config.batch_size)


def train_masked_lm(job, texts, heldout, count, steps_per_epoch):
    """Build the masked LM under the job's strategy and fit it with backups (resuming from one)."""
    config = job.config

    def masked_lm_compiled():
        masked_lm = ReviewMaskedLM.from_preset(config.preset, sequence_length=config.max_seq_length,
                                               precision=job.precision.name, mask_rate=config.mask_rate,
                                               shuffle_seed=config.seed)
        masked_lm.compile(optimizer=adamw_with_warmup(config.learning_rate, config.epochs * steps_per_epoch,
                                                      config.warmup_ratio, config.weight_decay, config.clip_norm))
        return masked_lm

    masked_lm, state = job.build(masked_lm_compiled)
    faults.check_room_to_adapt(masked_lm, job.run_dir, config.output)
    if state:
        job.run_dir.check_same_config(config)
    state = job.start(state, steps_per_epoch, replace_directory=True)
    heldout_batches = None
    if len(heldout):  # masked once, the same way every epoch: comparable from epoch to epoch
        heldout_batches = masked_lm.masked_batches(heldout, config.batch_size).take(
            math.ceil(len(heldout) / config.batch_size)).cache()

    def masked_batches(first_epoch, skip_batches):
        return masked_lm.masked_batches(texts, config.batch_size, first_epoch, skip_batches, steps_per_epoch)

    job.fit(masked_lm, state, masked_batches, count, heldout_batches, len(heldout) * (config.epochs - state.epoch),
            monitor="val_accuracy" if len(heldout) else "accuracy", steps_per_epoch=steps_per_epoch)
    return masked_lm, state
