"""The loss terms of the pre-training methods, one small module each (import from the modules).

Each module's docstring names the paper, the formula and the tensor shapes; the methods in
``selfsup_zoo.training.methods`` compose them. See ``docs/methods/care.md`` and
``docs/methods/sere.md``.
"""
