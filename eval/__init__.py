"""Evaluation: encode a test split once, score text->video and video->text, report."""
