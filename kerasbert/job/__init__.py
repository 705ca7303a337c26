"""The command-line job: options (`config`, `arguments`), the `kerasbert` command (`cli`), the
training run (`training`, `resume`, `rundir`), its report (`report`, `plots`), the adaptation
job (`adapting`), the recipe sweep on validation (`sweep`) and the export job (`exporting`).
Built on the library (`kerasbert`) and deployment (`kerasbert.deploy`).
"""
