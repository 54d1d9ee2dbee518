"""Everything beyond chapter 6: the fast trainer, the bonus experiments, metrics, saved classifiers, looking
inside, attacks and the command line.

The rule of the house: this package imports the chapter's four modules (gpt_model, gpt_download, spam_dataset,
train_classifier); they never import it, so a learner reads them beside the book without meeting anything here.
tests/test_layout.py enforces it.
"""
