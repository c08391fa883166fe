"""The text benchmark's classifier recipe (issue 21), shared by ``fastxai demo``'s
text section and the model zoo's ``minilm_classifier``.

``CLASSIFIER`` holds the options of
:func:`fastxai_jax.models.minilm_classifier.train_minilm_classifier`: an MLP head
(``head_hidden=256``: Dense, GELU, Dense on the frozen mean-pooled MiniLM)
trained for 3000 steps, half of each batch being training sentences with their
evidence and a share U[0, 1] of their other tokens dropped, labelled uniform,
so that deleted evidence means "no class". Command and measurements: the
docstring of :data:`fastxai_jax.evaluation.text.DEMO_CLASSIFIER` (99.6% test
accuracy on 1000 held-out sentences; 96.4% of evidence-free sentences within
0.1 of p = 0.5).

Kept free of imports, so that models and evaluation can both read it.
"""

CLASSIFIER = {"null_fraction": 0.5, "null_other": 1.0, "num_steps": 3000, "head_hidden": 256}
