"""The end of a training run: test metrics, pictures, model.keras, metrics.json and the report."""

import resource
import time

from kerasbert import evaluation, files, monitoring
from kerasbert.inference import inference_copy
from kerasbert.job import plots, report, resume, rundir
from kerasbert.model import save_classifier
from kerasbert.progress import minutes, phase


def evaluate_and_save(config, run_dir, splits, tuned, task, hardware, precision, started):
    """The end of a run: test metrics, pictures, model.keras, metrics.json, report; then the backup goes."""
    classifier, preprocessor = tuned.classifier, tuned.classifier.preprocessor

    sizes = splits.sizes()
    phase(f"evaluating on {sizes['test']} test examples")
    test_data, labels, words = splits.test_batches(preprocessor, config.eval_batch_size, config.length_bucketing)
    # Across workers, predict would need every worker; the chief predicts alone on a local copy.
    evaluated = inference_copy(classifier) if task.workers > 1 else classifier
    probabilities, eval_seconds = evaluation.predict_probabilities(evaluated, test_data)
    test_metrics = evaluation.classification_metrics(labels, probabilities, splits.class_names)
    test_metrics["by_length"] = evaluation.accuracy_by_words(words, labels, probabilities)
    images = {"confusion_matrix": run_dir.file(rundir.CONFUSION_MATRIX_PNG),
              "precision_recall": run_dir.file(rundir.PRECISION_RECALL_PNG)}
    plots.save_confusion_matrix(test_metrics["confusion_matrix"], splits.class_names, images["confusion_matrix"])
    plots.save_precision_recall(labels, probabilities, splits.class_names, images["precision_recall"])
    monitoring.log_test_results(run_dir.log_dir, labels, probabilities, test_metrics,
                                splits.class_names, tuned.state.global_step, images)

    phase("saving model.keras (tokenizer and optimizer state included)")
    save_classifier(evaluated, run_dir.model_file)

    first_step = tuned.throughput.first_step_ended
    metrics = {
        "test": test_metrics,
        "validation": {name[4:]: values[-1] for name, values in tuned.history.items() if name.startswith("val_")},
        "class_names": splits.class_names,
        "examples": sizes,
        "epochs_run": len(tuned.state.history),
        "optimizer_steps": tuned.state.global_step,
        "steps_per_epoch": tuned.steps_per_epoch,
        "timing": {
            # From the job's start (TensorFlow imported) to the end of this process's first training step.
            "first_step_seconds": first_step and first_step - started,
            "train_seconds": tuned.throughput.train_seconds,
            "train_sequences_per_second": tuned.throughput.sequences_per_second,
            "eval_seconds": eval_seconds,
            "eval_sequences_per_second": len(labels) / eval_seconds,
            "total_seconds": time.perf_counter() - started,
        },
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "strategy": type(tuned.strategy).__name__,
        "replicas": tuned.strategy.num_replicas_in_sync,
        "workers": task.workers,
        "hardware": hardware.to_dict(),
        "precision": {"requested": config.mixed_precision, "resolved": precision.name, "policy": precision.policy,
                      "reason": precision.reason},
        "estimate": tuned.time_estimate.estimate,
    }
    files.write_json(run_dir.metrics_file, metrics)
    report.write_report(run_dir)
    resume.Backup(run_dir.backup_dir).delete()  # only now: the run is complete
    latest = run_dir.point_latest_here()
    phase(f"test metrics ({len(labels)} examples), written to {run_dir.metrics_file}:\n"
          + evaluation.format_metrics_table(test_metrics))
    phase(f"report with pictures: {run_dir.report_file}"
          + (f"; {latest} links to this run" if latest else ""))
    timing = metrics["timing"]
    estimated = f" (estimated {minutes(metrics['estimate']['total_seconds'])})" if metrics["estimate"] else ""
    phase(f"train {timing['train_sequences_per_second']:.1f} seq/s, eval {timing['eval_sequences_per_second']:.1f} "
          f"seq/s, total {minutes(timing['total_seconds'])}{estimated}, peak memory {metrics['peak_rss_mib']:.0f} MiB")
    return metrics
