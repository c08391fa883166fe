"""Evaluation sections of the demo (the image demo moves here; text: :mod:`.text`)."""
